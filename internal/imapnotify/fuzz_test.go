package imapnotify

import (
	"bytes"
	"context"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/xapsproxy/xapsproxy/event"
)

// streamConn is a net.Conn that reads a fixed byte stream and discards
// what is written; its deadlines never expire.
type streamConn struct {
	r *bytes.Reader
}

func (s *streamConn) Read(p []byte) (int, error)       { return s.r.Read(p) }
func (s *streamConn) Write(p []byte) (int, error)      { return len(p), nil }
func (s *streamConn) Close() error                     { return nil }
func (s *streamConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (s *streamConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (s *streamConn) SetDeadline(time.Time) error      { return nil }
func (s *streamConn) SetReadDeadline(time.Time) error  { return nil }
func (s *streamConn) SetWriteDeadline(time.Time) error { return nil }

// fuzzSetup is what the server says before the fuzzed part: the greeting,
// the answer to LOGIN (tag n1) and to NOTIFY (tag n2), as Dovecot does.
const fuzzSetup = "* OK [CAPABILITY IMAP4rev1 LITERAL+ NOTIFY] Dovecot (Debian) ready.\r\n" +
	"n1 OK [CAPABILITY IMAP4rev1 LITERAL+ NOTIFY] Logged in\r\n" +
	"* STATUS INBOX (MESSAGES 1 UIDNEXT 2 UIDVALIDITY 1796175778 UNSEEN 1 HIGHESTMODSEQ 2)\r\n" +
	"* STATUS {4}\r\nFét (MESSAGES 0 UIDNEXT 1 UIDVALIDITY 1796175830 UNSEEN 0 HIGHESTMODSEQ 1)\r\n" +
	"* STATUS Other (MESSAGES 0 UIDNEXT 1 UIDVALIDITY 1796175777 UNSEEN 0 HIGHESTMODSEQ 1)\r\n" +
	"n2 OK NOTIFY completed (0.004 + 0.000 + 0.003 secs).\r\n"

var fuzzWatched = []string{"INBOX", "Notes", "F&AOk-t", "My Folder"}

// FuzzResponses feeds a client in NOTIFY arbitrary server output. Whatever
// it is, the client must not panic, must end (at the end of the input),
// and may only report watched mailboxes, by their decoded names.
func FuzzResponses(f *testing.F) {
	f.Add([]byte("* STATUS INBOX (MESSAGES 2 UIDNEXT 3 UNSEEN 2 HIGHESTMODSEQ 3)\r\n"))
	f.Add([]byte("* LIST () \"/\" Notes2 (\"OLDNAME\" (Notes))\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		stream := append([]byte(fuzzSetup), data...)
		c := New(&streamConn{r: bytes.NewReader(stream)}, Options{User: "alice", MaxResponse: 512, Keepalive: -1})
		ctx := context.Background()
		if err := c.Greeting(ctx); err != nil {
			t.Fatal(err)
		}
		if err := c.Login(ctx, "alice*master", "pw"); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Notify(ctx, fuzzWatched); err != nil {
			t.Fatal(err)
		}
		names := []string{"INBOX", "Notes", "Fét", "My Folder"}
		for i := 0; ; i++ {
			if i > 2*len(data)+10 {
				t.Fatal("more results than input bytes")
			}
			if n := len(c.pending); n > 5*len(names) {
				t.Fatalf("%d hints queued", n)
			}
			h, err := c.Next(ctx)
			if err == ErrOverflow {
				if !c.notifying {
					return // off until Notify, which this input cannot answer
				}
				continue
			}
			if err != nil {
				if c.usable() == nil {
					t.Fatalf("Next failed (%v) but the client is still usable", err)
				}
				return
			}
			if !slices.Contains(names, h.Mailbox) || h.User != "alice" || h.What < event.Unknown || h.What > event.Gone {
				t.Fatalf("hint %+v", h)
			}
		}
	})
}

// fuzzIdleSetup is what the server says before the fuzzed part of
// FuzzIdle: the greeting, the answers to LOGIN (n1), EXAMINE INBOX (n2) and
// IDLE (n3), as Dovecot 2.3.19 does.
const fuzzIdleSetup = "* OK [CAPABILITY IMAP4rev1 LITERAL+ IDLE] Dovecot (Debian) ready.\r\n" +
	"n1 OK [CAPABILITY IMAP4rev1 LITERAL+ IDLE NOTIFY] Logged in\r\n" +
	"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n" +
	"* OK [PERMANENTFLAGS ()] Read-only mailbox.\r\n" +
	"* 2 EXISTS\r\n* 0 RECENT\r\n" +
	"* OK [UIDVALIDITY 1796178071] UIDs valid\r\n* OK [UIDNEXT 3] Predicted next UID\r\n" +
	"n2 OK [READ-ONLY] Examine completed (0.001 + 0.000 secs).\r\n" +
	"+ idling\r\n"

// FuzzIdle feeds a client in IDLE arbitrary server output. Whatever it is,
// the client must not panic, must end (at the end of the input), keeps a
// bounded number of updates, and reports only updates of the known kinds.
func FuzzIdle(f *testing.F) {
	// testdata/fuzz/FuzzIdle holds what Dovecot sent in TestDovecotIdle and
	// TestDovecotIdleHibernated.
	f.Add([]byte("* 4 EXISTS\r\n* 4 FETCH (FLAGS (\\Recent))\r\n"))
	f.Add([]byte("* 2 FETCH (UID 2 MODSEQ (12) FLAGS (\\Seen) BODY[HEADER] {4}\r\nab\r\n)\r\n* OK Still here\r\n* BYE Server shutting down.\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		stream := append([]byte(fuzzIdleSetup), data...)
		c := New(&streamConn{r: bytes.NewReader(stream)}, Options{User: "alice", MaxResponse: 512})
		ctx := context.Background()
		if err := c.Greeting(ctx); err != nil {
			t.Fatal(err)
		}
		if err := c.Login(ctx, "alice*master", "pw"); err != nil {
			t.Fatal(err)
		}
		if mb, err := c.Examine(ctx, "INBOX"); err != nil || mb != (Mailbox{UIDValidity: 1796178071, UIDNext: 3, Messages: 2}) {
			t.Fatalf("Examine = %+v, %v", mb, err)
		}
		if err := c.Idle(ctx, 0); err != nil {
			t.Fatal(err)
		}
		for i := 0; ; i++ {
			if i > len(data)+10 {
				t.Fatal("more updates than input bytes")
			}
			if n := len(c.updates); n > maxUpdates+1 {
				t.Fatalf("%d updates kept", n)
			}
			u, err := c.NextUpdate(ctx)
			if err != nil {
				if c.usable() == nil {
					t.Fatalf("NextUpdate failed (%v) but the client is still usable", err)
				}
				return
			}
			if u.Kind < UpdateExists || u.Kind > UpdateLost || u.OnlyRecent && u.Kind != UpdateFetch {
				t.Fatalf("update %+v", u)
			}
		}
	})
}
