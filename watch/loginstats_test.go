package watch_test

import (
	"bufio"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/xapsproxy/xapsproxy/config"
	"github.com/xapsproxy/xapsproxy/internal/testlog"
	"github.com/xapsproxy/xapsproxy/watch"
)

// startUnavailableBackend is a scripted IMAP backend that answers every
// LOGIN with a temporary NO ([UNAVAILABLE], RFC 5530) and any other
// command with OK.
func startUnavailableBackend(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(waitTimeout))
				c.Write([]byte("* OK [CAPABILITY IMAP4rev1 IDLE] ready\r\n"))
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					tag, rest, _ := strings.Cut(strings.TrimSpace(line), " ")
					cmd, _, _ := strings.Cut(strings.ToUpper(rest), " ")
					switch cmd {
					case "LOGIN":
						c.Write([]byte(tag + " NO [UNAVAILABLE] Try again later\r\n"))
					case "LOGOUT":
						c.Write([]byte("* BYE\r\n" + tag + " OK done\r\n"))
						return
					default:
						c.Write([]byte(tag + " OK done\r\n"))
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// A login the backend turns down for now counts as a temporary failure,
// not as refused: the watcher retries on its usual backoff.
func TestTemporaryLoginFailuresAreCounted(t *testing.T) {
	t.Parallel()
	logger := testlog.New(t, "masterpw")
	e := &env{t: t, st: openStore(t), rec: &recorder{}, log: logger}
	e.m = watch.New(watch.Options{
		Store:      e.st,
		Notifier:   e.rec,
		Backend:    config.Backend{Address: startUnavailableBackend(t), TLS: config.BackendTLSNone},
		Watch:      masterLogin("master", "masterpw"),
		Source:     watch.SourceIdle,
		MinBackoff: 10 * time.Millisecond,
		MaxBackoff: 50 * time.Millisecond,
		Logger:     logger,
	})
	e.register("alice", 1, "INBOX")
	e.run()
	s := waitStats(t, e.m, "two temporary login failures", func(s watch.Stats) bool { return s.LoginsFailed >= 2 })
	if s.LoginsRefused != 0 || s.Refused != 0 {
		t.Errorf("temporary failures counted as refusals: LoginsRefused %d, Refused %d", s.LoginsRefused, s.Refused)
	}
}
