package push_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/xapsproxy/xapsproxy/event"
	"github.com/xapsproxy/xapsproxy/internal/apnstest"
	"github.com/xapsproxy/xapsproxy/push"
	"github.com/xapsproxy/xapsproxy/store"
)

// clockPusher is a Pusher on a fake clock with the default change delay,
// recording what it sends instead of sending it.
func clockPusher(t *testing.T, regs ...store.Registration) (*push.Pusher, *fakeClock, *funcSender) {
	t.Helper()
	clk, s := newFakeClock(), &funcSender{}
	p := push.New(push.Options{Store: newMemStore(regs...), Sender: s, Logger: testLogger(t), Clock: clk})
	return p, clk, s
}

func changed(user, mailbox string) event.Event {
	return event.Event{User: user, Mailbox: mailbox, Kind: event.KindChanged}
}

func newMail(user, mailbox string) event.Event {
	return event.Event{User: user, Mailbox: mailbox, Kind: event.KindNew}
}

func TestTenChangesGiveOnePushAfterTheDelay(t *testing.T) {
	p, clk, s := clockPusher(t, reg("alice", 1, "acct-a", "INBOX", "Notes"))
	startRun(t, p)

	for i := range 10 {
		if i > 0 {
			clk.Advance(time.Second)
		}
		p.Notify(changed("alice", "INBOX"))
	}
	last := clk.Now()
	clk.waitArmed(t, last.Add(push.DefaultChangeDelay))

	clk.Advance(push.DefaultChangeDelay - time.Millisecond)
	if n := len(s.sent()); n != 0 {
		t.Fatalf("%d pushes before the delay after the last change was over, want 0", n)
	}
	clk.Advance(time.Millisecond)
	waitFor(t, 5*time.Second, "the push", func() bool { return len(s.sent()) > 0 })
	waitIdle(t, p)

	sent := s.sent()
	if len(sent) != 1 {
		t.Fatalf("%d pushes after 10 changes, want 1", len(sent))
	}
	if !slices.Equal(sent[0].Mailboxes, []string{"INBOX"}) {
		t.Errorf("push names %q, want [INBOX]", sent[0].Mailboxes)
	}
	if a := clk.armed(); len(a) != 0 {
		t.Errorf("the pusher still waits for %v", a)
	}
}

func TestNewMailCarriesPendingChangesAndCancelsTheirPush(t *testing.T) {
	p, clk, s := clockPusher(t, reg("alice", 1, "acct-a", "INBOX", "Notes"))
	startRun(t, p)

	p.Notify(changed("alice", "INBOX"))
	clk.waitArmed(t, clk.Now().Add(push.DefaultChangeDelay))
	clk.Advance(10 * time.Second)
	p.Notify(newMail("alice", "Notes"))

	// At once: the clock does not move.
	waitFor(t, 5*time.Second, "the new-mail push", func() bool { return len(s.sent()) > 0 })
	waitIdle(t, p)
	sent := s.sent()
	if len(sent) != 1 {
		t.Fatalf("%d pushes, want 1", len(sent))
	}
	if !slices.Equal(sent[0].Mailboxes, []string{"INBOX", "Notes"}) {
		t.Errorf("push names %q, want [INBOX Notes]: the new mail and the pending change", sent[0].Mailboxes)
	}
	// Nothing is left to send: no job and no timer for the change.
	if a := clk.armed(); len(a) != 0 {
		t.Errorf("the pusher still waits for %v", a)
	}
	clk.Advance(time.Hour)
	if n := p.Pending(); n != 0 || len(s.sent()) != 1 {
		t.Errorf("after an hour: %d pending, %d pushes; want 0 and 1", n, len(s.sent()))
	}
}

func TestChangesInTwoMailboxesGiveOnePushNamingBoth(t *testing.T) {
	e := newAPNsEnv(t)
	st := newMemStore(reg("alice", 1, "acct-a", "INBOX", "Notes", "Work"))
	clk := newFakeClock()
	p := push.New(push.Options{Store: st, Sender: e.sender, Logger: testLogger(t), Topic: e.creds.Topic, Clock: clk})
	startRun(t, p)

	p.Notify(changed("alice", "Notes"))
	clk.Advance(5 * time.Second)
	p.Notify(changed("alice", "inbox")) // the registration's spelling is pushed
	due := clk.Now().Add(push.DefaultChangeDelay)
	clk.waitArmed(t, due)
	clk.Advance(push.DefaultChangeDelay)

	reqs := e.fake.WaitRequests(t, 1, 5*time.Second)
	waitIdle(t, p)
	if reqs = e.fake.Requests(); len(reqs) != 1 {
		t.Fatalf("%d requests, want 1", len(reqs))
	}
	want := []string{apnstest.MailboxHash("INBOX"), apnstest.MailboxHash("Notes")}
	if !slices.Equal(reqs[0].Mailboxes, want) {
		t.Errorf("m = %q, want %q (MD5 of INBOX and Notes)", reqs[0].Mailboxes, want)
	}
	if want := `{"aps":{"account-id":"acct-a","m":["7e33429f656f1e6e9d79b29c3f82c57e","f4c6f851b00d5518bf888815de279aba"]}}`; string(reqs[0].Body) != want {
		t.Errorf("body %s, want %s", reqs[0].Body, want)
	}
}

func TestMailInAnUnregisteredMailboxIsNotPushed(t *testing.T) {
	p, clk, s := clockPusher(t, reg("alice", 1, "acct-a", "INBOX", "Notes"), reg("alice", 2, "acct-b", "Archive"))
	startRun(t, p)

	p.Notify(newMail("alice", "Archive"))
	p.Notify(changed("alice", "Spam"))
	waitFor(t, 5*time.Second, "the Archive push", func() bool { return len(s.sent()) > 0 })
	waitIdle(t, p)
	clk.Advance(time.Hour)

	sent := s.sent()
	if len(sent) != 1 || sent[0].DeviceToken != token(2) || !slices.Equal(sent[0].Mailboxes, []string{"Archive"}) {
		t.Errorf("pushed %+v, want one push to token 2 naming Archive", sent)
	}
	if a := clk.armed(); len(a) != 0 {
		t.Errorf("the pusher waits for %v for a mailbox nobody registered", a)
	}
}

func TestPushNamesTheRegistrationsSpelling(t *testing.T) {
	p, _, s := clockPusher(t, reg("alice", 1, "acct-a", "Inbox", "Notes"))
	startRun(t, p)
	p.Notify(newMail("alice", "INBOX"))
	waitIdle(t, p)
	if sent := s.sent(); len(sent) != 1 || !slices.Equal(sent[0].Mailboxes, []string{"Inbox"}) {
		t.Errorf("pushed %+v, want one push naming Inbox as registered", sent)
	}
}

func TestPushNamesAtMostMaxMailboxes(t *testing.T) {
	var names []string
	for i := range push.MaxPushMailboxes + 5 {
		names = append(names, fmt.Sprintf("Folder %02d", i))
	}
	p, _, s := clockPusher(t, reg("alice", 1, "acct-a", names...))
	// Reported before Run, so that one push carries them all.
	for _, n := range slices.Backward(names) {
		p.Notify(newMail("alice", n))
	}
	startRun(t, p)
	waitIdle(t, p)
	sent := s.sent()
	if len(sent) != 1 {
		t.Fatalf("%d pushes, want 1", len(sent))
	}
	if want := names[:push.MaxPushMailboxes]; !slices.Equal(sent[0].Mailboxes, want) {
		t.Errorf("push names %q, want the first %d in order: %q", sent[0].Mailboxes, push.MaxPushMailboxes, want)
	}
}

func TestOmitMailboxes(t *testing.T) {
	e := newAPNsEnv(t)
	st := newMemStore(reg("alice", 1, "acct-a", "INBOX", "Notes"))
	p := push.New(push.Options{Store: st, Sender: e.sender, Logger: testLogger(t), Topic: e.creds.Topic, OmitMailboxes: true})
	startRun(t, p)
	p.Notify(newMail("alice", "Notes"))
	reqs := e.fake.WaitRequests(t, 1, 5*time.Second)
	if want := `{"aps":{"account-id":"acct-a"}}`; string(reqs[0].Body) != want || reqs[0].Mailboxes != nil {
		t.Errorf("body %s, want %s", reqs[0].Body, want)
	}
	if _, err := p.PushUser(t.Context(), "alice"); err != nil {
		t.Fatal(err)
	}
	reqs = e.fake.WaitRequests(t, 2, 5*time.Second)
	if reqs[1].Mailboxes != nil {
		t.Errorf("test push body %s names mailboxes", reqs[1].Body)
	}
}
