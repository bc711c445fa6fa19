package push_test

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/xapsproxy/xapsproxy/event"
	"github.com/xapsproxy/xapsproxy/push"
	"github.com/xapsproxy/xapsproxy/store"
)

// sqliteStore opens a real store in a temporary directory, with regs.
func sqliteStore(t *testing.T, regs ...store.Registration) (*store.SQLite, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "xaps.db")
	st, err := store.Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	for _, r := range regs {
		if err := st.Register(t.Context(), r); err != nil {
			t.Fatal(err)
		}
	}
	return st, path
}

// commit is what an account's owner does on new mail (changed = false) or
// changes: the outbox entry, then the event naming it.
func commit(t *testing.T, st store.Store, p *push.Pusher, user, mailbox string, changed bool) int64 {
	t.Helper()
	id, err := st.CommitMailbox(t.Context(), user, mailbox, nil, &store.OutboxEntry{Changed: changed, At: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	if p != nil {
		kind := event.KindNew
		if changed {
			kind = event.KindChanged
		}
		p.Notify(event.Event{User: user, Mailbox: mailbox, Kind: kind, ID: id})
	}
	return id
}

func outboxIDs(t *testing.T, st store.Store) []int64 {
	t.Helper()
	out, err := st.Outbox(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var ids []int64
	for _, e := range out {
		ids = append(ids, e.ID)
	}
	return ids
}

func fastPusher(t *testing.T, st store.Store, s push.Sender) *push.Pusher {
	return push.New(push.Options{Store: st, Sender: s, Logger: testLogger(t), Topic: testTopic,
		ChangeDelay: time.Millisecond, RetryBase: time.Millisecond, RetryMax: 5 * time.Millisecond})
}

// What a stopped process left in the outbox is sent by the next Run, once,
// and the entry goes when APNs has answered.
func TestOutboxLeftoversAreSentAtStart(t *testing.T) {
	st, _ := sqliteStore(t, reg("alice", 1, "acct-a", "INBOX", "Notes"))
	commit(t, st, nil, "alice", "Notes", false)
	s := &funcSender{}
	p := fastPusher(t, st, s)
	startRun(t, p)
	waitFor(t, 5*time.Second, "the outbox to empty", func() bool { return p.Pending() == 0 && len(outboxIDs(t, st)) == 0 })
	sent := s.sent()
	if len(sent) != 1 || len(sent[0].Mailboxes) != 1 || sent[0].Mailboxes[0] != "Notes" {
		t.Fatalf("sent %+v; want one push naming Notes", sent)
	}
	regs, _ := st.Registrations(t.Context(), "alice")
	if regs[0].LastPushResult != "200" {
		t.Errorf("last push result = %q; want 200 recorded", regs[0].LastPushResult)
	}
}

// An entry stays while its push is retried and when the Pusher stops before
// APNs answered; a new Pusher on the same store (a restart) sends it, once.
func TestOutboxEntryOutlivesFailuresAndShutdown(t *testing.T) {
	st, _ := sqliteStore(t, reg("alice", 1, "acct-a"))
	failing := &funcSender{fn: func(ctx context.Context, n push.Notification) (push.Response, error) {
		return push.Response{StatusCode: 503, Reason: "ServiceUnavailable"}, nil
	}}
	p := fastPusher(t, st, failing)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- p.Run(ctx) }()
	id := commit(t, st, p, "alice", "INBOX", false)
	waitFor(t, 5*time.Second, "three attempts", func() bool { return len(failing.sent()) >= 3 })
	cancel()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if ids := outboxIDs(t, st); len(ids) != 1 || ids[0] != id {
		t.Fatalf("outbox after failed attempts and shutdown = %v; want [%d]", ids, id)
	}

	ok := &funcSender{}
	p2 := fastPusher(t, st, ok)
	startRun(t, p2)
	waitFor(t, 5*time.Second, "the outbox to empty", func() bool { return p2.Pending() == 0 && len(outboxIDs(t, st)) == 0 })
	if n := len(ok.sent()); n != 1 {
		t.Fatalf("restarted Pusher sent %d pushes; want 1", n)
	}
}

// With two devices, the entry goes only when both have been answered.
func TestOutboxEntryWaitsForEveryDevice(t *testing.T) {
	st, _ := sqliteStore(t, reg("alice", 1, "acct-a"), reg("alice", 2, "acct-b"))
	release := make(chan struct{})
	var once sync.Once
	held := make(chan struct{})
	s := &funcSender{fn: func(ctx context.Context, n push.Notification) (push.Response, error) {
		if n.DeviceToken == token(2) {
			once.Do(func() { close(held) })
			select {
			case <-release:
			case <-ctx.Done():
				return push.Response{}, ctx.Err()
			}
		}
		return push.Response{StatusCode: 200}, nil
	}}
	p := fastPusher(t, st, s)
	startRun(t, p)
	id := commit(t, st, p, "alice", "INBOX", false)
	<-held
	waitFor(t, 5*time.Second, "device 1's outcome to be recorded", func() bool {
		regs, _ := st.Registrations(t.Context(), "alice")
		return regs[0].LastPushResult == "200"
	})
	if ids := outboxIDs(t, st); len(ids) != 1 || ids[0] != id {
		t.Fatalf("outbox with device 2 unanswered = %v; want [%d]", ids, id)
	}
	close(release)
	waitFor(t, 5*time.Second, "the outbox to empty", func() bool { return len(outboxIDs(t, st)) == 0 })
}

// Entries nobody can be pushed for go at once; an entry older than the
// expiration is dropped unsent; answers that end a push (rejected, pruned)
// remove it like a success.
func TestOutboxEntriesEndWithoutRetry(t *testing.T) {
	st, _ := sqliteStore(t, reg("alice", 1, "acct-a"), reg("bob", 2, "acct-b"), reg("carol", 3, "acct-c", "Notes"))
	old := time.Now().Add(-25 * time.Hour)
	if _, err := st.CommitMailbox(t.Context(), "carol", "Notes", nil, &store.OutboxEntry{At: old}); err != nil {
		t.Fatal(err)
	}
	s := &funcSender{fn: func(_ context.Context, n push.Notification) (push.Response, error) {
		switch n.DeviceToken {
		case token(1):
			return push.Response{StatusCode: 400, Reason: "DeviceTokenNotForTopic"}, nil
		case token(2):
			return push.Response{StatusCode: 410, Reason: "Unregistered"}, nil
		}
		return push.Response{}, errors.New("unexpected push to " + n.DeviceToken)
	}}
	p := fastPusher(t, st, s)
	startRun(t, p)
	commit(t, st, p, "alice", "INBOX", false)
	commit(t, st, p, "bob", "INBOX", false)
	commit(t, st, p, "dave", "INBOX", false)  // no registration
	commit(t, st, p, "carol", "INBOX", false) // carol registered Notes only
	waitFor(t, 5*time.Second, "the outbox to empty", func() bool { return p.Pending() == 0 && len(outboxIDs(t, st)) == 0 })
	if n := len(s.sent()); n != 2 {
		t.Fatalf("sent %d pushes; want 2 (alice's and bob's): %+v", n, s.sent())
	}
	if regs, _ := st.Registrations(t.Context(), "bob"); len(regs) != 0 {
		t.Errorf("bob's pruned registration is still stored")
	}
}

// Mail that comes while the push for earlier mail is in flight gets an
// entry of its own, which stays until the push that carries it is
// answered: every mail gives a push, and nothing is left behind.
func TestOutboxNewerEntryWhileInFlight(t *testing.T) {
	st, _ := sqliteStore(t, reg("alice", 1, "acct-a"))
	entered := make(chan struct{}, 4)
	proceed := make(chan struct{}, 4)
	s := &funcSender{fn: func(ctx context.Context, n push.Notification) (push.Response, error) {
		entered <- struct{}{}
		select {
		case <-proceed:
		case <-ctx.Done():
			return push.Response{}, ctx.Err()
		}
		return push.Response{StatusCode: 200}, nil
	}}
	p := fastPusher(t, st, s)
	startRun(t, p)
	first := commit(t, st, p, "alice", "INBOX", false)
	<-entered
	second := commit(t, st, p, "alice", "INBOX", false)
	if second <= first {
		t.Fatalf("second entry id %d not above first %d", second, first)
	}
	proceed <- struct{}{} // the first push is answered
	<-entered             // the second push is in flight
	if ids := outboxIDs(t, st); len(ids) != 1 || ids[0] != second {
		t.Fatalf("outbox while the second push is in flight = %v; want [%d]", ids, second)
	}
	proceed <- struct{}{}
	waitFor(t, 5*time.Second, "the outbox to empty", func() bool { return p.Pending() == 0 && len(outboxIDs(t, st)) == 0 })
	if n := len(s.sent()); n != 2 {
		t.Fatalf("sent %d pushes; want 2", n)
	}
}
