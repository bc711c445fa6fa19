package watch_test

import (
	"bufio"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/xapsproxy/xapsproxy/config"
	"github.com/xapsproxy/xapsproxy/internal/testlog"
	"github.com/xapsproxy/xapsproxy/watch"
)

// overflowingBackend speaks just enough IMAP for a NOTIFY session, and says
// it lost notifications right after every NOTIFY it accepts, as a broken or
// hostile server may. It counts the NOTIFY SET commands it gets.
func overflowingBackend(t *testing.T) (addr string, sets *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	sets = &atomic.Int64{}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				c.Write([]byte("* OK [CAPABILITY IMAP4rev1 NOTIFY] ready\r\n"))
				for {
					line, err := br.ReadString('\n')
					if err != nil {
						return
					}
					tag, rest, _ := strings.Cut(strings.TrimRight(line, "\r\n"), " ")
					var out string
					switch cmd := strings.ToUpper(rest); {
					case strings.HasPrefix(cmd, "LOGIN "):
						out = tag + " OK [CAPABILITY IMAP4rev1 NOTIFY] logged in\r\n"
					case strings.HasPrefix(cmd, "NOTIFY SET"):
						sets.Add(1)
						out = "* STATUS INBOX (UIDVALIDITY 1 UIDNEXT 1 MESSAGES 0 UNSEEN 0)\r\n" +
							tag + " OK NOTIFY done\r\n* OK [NOTIFICATIONOVERFLOW] lost them\r\n"
					case strings.HasPrefix(cmd, "STATUS "):
						out = "* STATUS INBOX (UIDVALIDITY 1 UIDNEXT 1)\r\n" + tag + " OK done\r\n"
					case strings.HasPrefix(cmd, "LOGOUT"):
						c.Write([]byte("* BYE bye\r\n" + tag + " OK done\r\n"))
						return
					default:
						out = tag + " OK done\r\n"
					}
					if _, err := c.Write([]byte(out)); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String(), sets
}

// A backend that loses notifications every time right after NOTIFY does
// not keep the watcher asking again and again without a pause: after a few
// such overflows in a row the session ends, and the reconnects back off.
func TestNotifyOverflowRightAfterNotifyBacksOff(t *testing.T) {
	t.Parallel()
	addr, sets := overflowingBackend(t)
	logger := testlog.New(t, "masterpw")
	e := &env{t: t, st: openStore(t), rec: &recorder{}, log: logger}
	e.m = watch.New(watch.Options{
		Store:      e.st,
		Notifier:   e.rec,
		Backend:    config.Backend{Address: addr},
		Watch:      masterLogin("master", "masterpw"),
		Source:     watch.SourceNotify,
		MinBackoff: 100 * time.Millisecond,
		MaxBackoff: 400 * time.Millisecond,
		Logger:     logger,
	})
	e.register("alice", 1, "INBOX")
	e.run()
	time.Sleep(2 * time.Second)
	// A few NOTIFYs per session, sessions at most every 100-400 ms.
	if n := sets.Load(); n > 100 {
		t.Errorf("%d NOTIFY SET commands in 2 s", n)
	}
	if n := sets.Load(); n == 0 {
		t.Error("no NOTIFY at all")
	}
}
