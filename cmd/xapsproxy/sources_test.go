package main

// The same behaviour from every event source, through the whole binary,
// against the real Dovecot: what is pushed, for which mailbox, and when.

import (
	"context"
	"fmt"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/xapsproxy/xapsproxy/config"
	"github.com/xapsproxy/xapsproxy/internal/apnstest"
	"github.com/xapsproxy/xapsproxy/internal/dovecottest"
	"github.com/xapsproxy/xapsproxy/watch"
)

// sources are the event sources tested here, each with what it needs.
var sources = []struct {
	name  string
	stack func(*testing.T) *stack
}{
	{"dovecot", newEventsStack},
	{"notify", func(t *testing.T) *stack {
		s := newStack(t) // auto, without [events]: NOTIFY, which Dovecot offers
		s.cfg.Watch.Source = config.SourceAuto
		return s
	}},
	{"idle", func(t *testing.T) *stack {
		s := newStack(t)
		s.cfg.Watch.Source = config.SourceIdle
		return s
	}},
}

// eventsSecret is what Dovecot and xapsproxy share in the tests.
const eventsSecret = "test-events-secret-0123456789"

// newEventsStack is a stack whose Dovecot posts its own events to
// xapsproxy through the shipped script and snippet (watch.source = "auto"
// picks them).
func newEventsStack(t *testing.T) *stack {
	t.Helper()
	addr := freeAddr(t)
	s := newStackWith(t, dovecottest.Options{ExtraConfig: dovecottest.EventsHook(t, "http://"+addr+"/dovecot/events", eventsSecret)},
		fmt.Sprintf("\n[events]\nlisten = %q\nsecret = %q\n", addr, eventsSecret))
	s.dovecot.InstallEventsScript(t)
	s.secrets = append(s.secrets, eventsSecret)
	return s
}

// freeAddr is a loopback address with a port free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// newSourceStack is a source's stack with a short change_delay, a poll
// interval short enough for mailboxes the IDLE source does not idle on,
// and Notes and Junk created.
func newSourceStack(t *testing.T, newStack func(*testing.T) *stack) *stack {
	s := newStack(t)
	s.cfg.Watch.ChangeDelay = time.Second
	s.cfg.Watch.PollInterval = time.Second
	for _, mb := range []string{"Notes", "Junk"} {
		s.dovecot.Doveadm(t, "mailbox", "create", "-u", "alice", mb)
	}
	return s
}

// waitSourceReady waits until alice's source sees changes: her IDLE
// connection is in IDLE, or her owner takes Dovecot's events.
func (s *stack) waitSourceReady() {
	s.t.Helper()
	waitUntil(s.t, "alice's source", func() bool {
		st := s.app.watch.Stats()
		if st.Source == watch.SourceEvents {
			return st.Owners == 1
		}
		return st.Watchers[watch.StateWatching] == 1
	})
}

// aliceClient is alice's own IMAP session on Dovecot, beside the proxy:
// the phone's other device.
func (s *stack) aliceClient() *imapclient.Client {
	s.t.Helper()
	c, err := imapclient.DialInsecure(s.dovecot.IMAPAddr, nil)
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() { c.Close() })
	if err := c.Login("alice", "alicepw").Wait(); err != nil {
		s.t.Fatal(err)
	}
	return c
}

func appendNote(t *testing.T, c *imapclient.Client, mailbox string) {
	t.Helper()
	msg := []byte("From: alice@example.com\r\nSubject: note\r\n\r\nsaved on the phone\r\n")
	w := c.Append(mailbox, int64(len(msg)), nil)
	if _, err := w.Write(msg); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Wait(); err != nil {
		t.Fatalf("APPEND to %s: %v", mailbox, err)
	}
}

func wantMailboxes(t *testing.T, r apnstest.Request, names ...string) {
	t.Helper()
	var want []string
	for _, n := range names {
		want = append(want, apnstest.MailboxHash(n))
	}
	slices.Sort(want)
	if !slices.Equal(r.Mailboxes, want) {
		t.Errorf("push names mailboxes %v, want %v (%v)", r.Mailboxes, want, names)
	}
}

// New mail in INBOX and in Notes each give one push naming that mailbox;
// mail in a mailbox nobody registered gives none.
func TestSourcesNewMail(t *testing.T) {
	t.Parallel()
	for _, src := range sources {
		t.Run(src.name, func(t *testing.T) {
			t.Parallel()
			s := newSourceStack(t, src.stack)
			s.start()
			s.connect().loginAndRegister(v2Line, "2") // INBOX and Notes
			s.deliver("to INBOX")
			wantMailboxes(t, s.expectPushes(1, v2Token, v2Account), "INBOX")
			c := s.aliceClient()
			appendNote(t, c, "Junk")
			appendNote(t, c, "Notes")
			wantMailboxes(t, s.expectPushes(2, v2Token, v2Account), "Notes")
		})
	}
}

// Ten flag changes give one push, change_delay after the last; new mail
// during that delay gives one push at once, which carries the changes.
func TestSourcesChanges(t *testing.T) {
	t.Parallel()
	for _, src := range sources {
		t.Run(src.name, func(t *testing.T) {
			t.Parallel()
			s := newSourceStack(t, src.stack)
			for range 10 {
				s.deliver("old")
			}
			s.start()
			s.connect().loginAndRegister(v2Line, "2")
			s.waitSourceReady()
			c := s.aliceClient()
			if _, err := c.Select("INBOX", nil).Wait(); err != nil {
				t.Fatal(err)
			}
			flag := func(seq uint32) {
				t.Helper()
				f := &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagSeen}, Silent: true}
				if err := c.Store(imap.SeqSetNum(seq), f, nil).Close(); err != nil {
					t.Fatal(err)
				}
			}
			start := time.Now()
			for seq := range uint32(10) {
				flag(seq + 1)
			}
			last := time.Now()
			r := s.expectPushes(1, v2Token, v2Account)
			if r.Received.Sub(last) < s.cfg.Watch.ChangeDelay {
				t.Errorf("the change push came %v after the last change, before change_delay %v (first change %v before)",
					r.Received.Sub(last), s.cfg.Watch.ChangeDelay, last.Sub(start))
			}
			wantMailboxes(t, r, "INBOX")

			// A change, then new mail before change_delay is up.
			f := &imap.StoreFlags{Op: imap.StoreFlagsDel, Flags: []imap.Flag{imap.FlagSeen}, Silent: true}
			if err := c.Store(imap.SeqSetNum(1), f, nil).Close(); err != nil {
				t.Fatal(err)
			}
			s.deliver("new during the delay")
			r = s.expectPushes(2, v2Token, v2Account) // and none later
			wantMailboxes(t, r, "INBOX")
		})
	}
}

// Mail delivered while xapsproxy is stopped is delivered all the same
// (Dovecot's hook gives up on the closed port at once) and pushed once
// when xapsproxy is back; mail delivered the moment a registration is
// answered is pushed too.
func TestSourcesRestartAndRightAfterRegistration(t *testing.T) {
	t.Parallel()
	for _, src := range sources {
		t.Run(src.name, func(t *testing.T) {
			t.Parallel()
			s := newSourceStack(t, src.stack)
			s.deliver("already there") // not news
			s.start()
			s.connect().loginAndRegister(v2Line, "2")
			s.deliver("right after the OK")
			s.expectPushes(1, v2Token, v2Account)

			s.stop()
			s.deliver("while xapsproxy is stopped")
			s.start()
			wantMailboxes(t, s.expectPushes(2, v2Token, v2Account), "INBOX")
		})
	}
}

// A phone that logs in as Alice@Example.COM gets pushes for the mail
// Dovecot files under alice (auth_username_format = %Ln in the test
// Dovecot): with backend.username_format set to the same, the
// registration is stored under alice, and every source's news of alice
// (Dovecot's events name her so; watchers log in as her) finds it.
func TestSourcesCanonicalUser(t *testing.T) {
	t.Parallel()
	for _, src := range sources {
		t.Run(src.name, func(t *testing.T) {
			t.Parallel()
			s := newSourceStack(t, src.stack)
			s.cfg.Backend.UsernameFormat = "%Ln"
			s.start()
			s.connect().loginAsAndRegister("Alice@Example.COM", "alicepw", v2Line, "2")
			users, err := s.app.store.Users(context.Background())
			if err != nil || len(users) != 1 || users[0] != "alice" {
				t.Fatalf("registered users %v, %v; want [alice]", users, err)
			}
			s.deliver("to alice")
			wantMailboxes(t, s.expectPushes(1, v2Token, v2Account), "INBOX")
		})
	}
}
