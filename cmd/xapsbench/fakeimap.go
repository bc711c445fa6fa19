package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// fakeIMAP is the backend of the memory runs of `sources`: a tiny IMAP
// server that lets any user log in with any password, offers IDLE and
// NOTIFY, says every mailbox is empty (UIDVALIDITY 1, UIDNEXT 1) and
// otherwise stays silent. It answers what xapsproxy's sources send:
// CAPABILITY, LOGIN, ENABLE, NOTIFY, STATUS, SELECT/EXAMINE, IDLE, NOOP
// and LOGOUT. Thousands of watched accounts then cost the proxy what they
// cost, without Dovecot's process per session; only the proxy's memory is
// measured (the fake runs in the bench's own process).
type fakeIMAP struct {
	ln    net.Listener
	conns atomic.Int64 // open now
	wg    sync.WaitGroup

	mu   sync.Mutex
	open map[net.Conn]struct{}
}

const fakeCaps = "IMAP4rev1 IDLE NOTIFY LITERAL+"

func startFakeIMAP() (*fakeIMAP, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("fake IMAP server: %w", err)
	}
	f := &fakeIMAP{ln: ln, open: make(map[net.Conn]struct{})}
	f.wg.Go(f.accept)
	return f, nil
}

func (f *fakeIMAP) addr() string { return f.ln.Addr().String() }

// Close stops accepting, closes every connection and waits for them.
func (f *fakeIMAP) Close() {
	f.ln.Close()
	f.mu.Lock()
	for c := range f.open {
		c.Close()
	}
	f.mu.Unlock()
	f.wg.Wait()
}

func (f *fakeIMAP) accept() {
	for {
		c, err := f.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond) // EMFILE and the like: back off, not a synchronization
			continue
		}
		f.mu.Lock()
		f.open[c] = struct{}{}
		f.mu.Unlock()
		f.conns.Add(1)
		f.wg.Go(func() {
			defer func() {
				c.Close()
				f.conns.Add(-1)
				f.mu.Lock()
				delete(f.open, c)
				f.mu.Unlock()
			}()
			serveFakeIMAP(c)
		})
	}
}

// serveFakeIMAP runs one session until the client leaves.
func serveFakeIMAP(c net.Conn) {
	r := bufio.NewReaderSize(c, 512)
	w := func(lines ...string) error {
		_, err := io.WriteString(c, strings.Join(lines, "\r\n")+"\r\n")
		return err
	}
	if w("* OK [CAPABILITY "+fakeCaps+"] fake IMAP server ready") != nil {
		return
	}
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		tag, rest, _ := strings.Cut(strings.TrimRight(line, "\r\n"), " ")
		cmd, args, _ := strings.Cut(rest, " ")
		switch strings.ToUpper(cmd) {
		case "CAPABILITY":
			err = w("* CAPABILITY "+fakeCaps, tag+" OK CAPABILITY completed")
		case "LOGIN":
			err = w(tag + " OK [CAPABILITY " + fakeCaps + "] logged in")
		case "ENABLE":
			err = w("* ENABLED", tag+" OK ENABLE completed")
		case "NOOP":
			err = w(tag + " OK NOOP completed")
		case "NOTIFY":
			var out []string
			for _, mb := range notifyMailboxes(args) {
				out = append(out, "* STATUS "+mb+" (MESSAGES 0 UIDNEXT 1 UIDVALIDITY 1 UNSEEN 0)")
			}
			err = w(append(out, tag+" OK NOTIFY completed")...)
		case "STATUS":
			mb, _ := cutMailbox(args)
			err = w("* STATUS "+mb+" (MESSAGES 0 UIDNEXT 1 UIDVALIDITY 1 UNSEEN 0)", tag+" OK STATUS completed")
		case "SELECT", "EXAMINE":
			err = w(`* FLAGS (\Seen \Answered \Flagged \Deleted \Draft)`, "* 0 EXISTS", "* 0 RECENT",
				"* OK [UIDVALIDITY 1] UIDs valid", "* OK [UIDNEXT 1] predicted next UID",
				tag+" OK [READ-ONLY] "+strings.ToUpper(cmd)+" completed")
		case "IDLE":
			if err = w("+ idling"); err == nil {
				if _, err = r.ReadString('\n'); err == nil { // DONE
					err = w(tag + " OK IDLE terminated")
				}
			}
		case "LOGOUT":
			w("* BYE logging out", tag+" OK LOGOUT completed")
			return
		default:
			err = w(tag + " BAD unknown command")
		}
		if err != nil {
			return
		}
	}
}

// notifyMailboxes finds the names in NOTIFY SET's "(mailboxes (A B))"
// filter, as sent (atoms or quoted strings without spaces); NOTIFY NONE and
// other filters name none.
func notifyMailboxes(args string) []string {
	_, list, ok := strings.Cut(args, "(mailboxes ")
	if !ok {
		return nil
	}
	list = strings.TrimPrefix(list, "(")
	list, _, _ = strings.Cut(list, ")")
	return strings.Fields(list)
}

// cutMailbox splits the first argument (an atom or a quoted string) off args.
func cutMailbox(args string) (mailbox, rest string) {
	if strings.HasPrefix(args, `"`) {
		if i := strings.Index(args[1:], `"`); i >= 0 {
			return args[:i+2], strings.TrimSpace(args[i+2:])
		}
	}
	mb, rest, _ := strings.Cut(args, " ")
	return mb, rest
}
