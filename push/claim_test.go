package push_test

// With Options.Owns (several instances share the accounts): Claim sends a
// user's owed pushes once; Release hands them to the next owner without
// clearing them, and waits for the pushes in flight.

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/xapsproxy/xapsproxy/event"
	"github.com/xapsproxy/xapsproxy/push"
)

type owned struct {
	mu sync.Mutex
	m  map[string]bool
}

func ownedOf(users ...string) *owned {
	o := &owned{m: map[string]bool{}}
	for _, u := range users {
		o.m[u] = true
	}
	return o
}

func (o *owned) owns(u string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.m[u]
}

func (o *owned) set(u string, v bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.m[u] = v
}

func sentTo(s *funcSender, tok string) int {
	n := 0
	for _, x := range s.sent() {
		if x.DeviceToken == tok {
			n++
		}
	}
	return n
}

// At start nothing of the outbox is sent; Claim sends the user's entries,
// once however often it is called, and leaves other users' alone.
func TestClaimSendsOwedEntriesOnce(t *testing.T) {
	st, _ := sqliteStore(t, reg("alice", 1, "acct-a"), reg("bob", 2, "acct-b"))
	alices := commit(t, st, nil, "alice", "INBOX", false)
	bobs := commit(t, st, nil, "bob", "INBOX", false)
	own := ownedOf("alice")
	s := &funcSender{}
	p := push.New(push.Options{Store: st, Sender: s, Logger: testLogger(t), Topic: testTopic, Owns: own.owns,
		ChangeDelay: time.Millisecond, RetryBase: time.Millisecond, RetryMax: 5 * time.Millisecond})
	startRun(t, p)
	for range 2 {
		if err := p.Claim(t.Context(), "alice"); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 5*time.Second, "alice's entry to be sent", func() bool {
		ids := outboxIDs(t, st)
		return p.Pending() == 0 && len(ids) == 1 && ids[0] == bobs
	})
	// An event of a user not owned is dropped: its entry is the owner's.
	p.Notify(event.Event{User: "bob", Mailbox: "INBOX", Kind: event.KindNew, ID: bobs})
	// The event of the entry Claim sent, late from the watcher that
	// committed it, does not push it again.
	p.Notify(event.Event{User: "alice", Mailbox: "INBOX", Kind: event.KindNew, ID: alices})
	if err := p.Claim(t.Context(), "alice"); err != nil {
		t.Fatal(err)
	}
	// A push for a third claim proves the first ones were handled.
	commit(t, st, nil, "alice", "INBOX", true)
	if err := p.Claim(t.Context(), "alice"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "alice's change to be sent", func() bool { return p.Pending() == 0 && len(outboxIDs(t, st)) == 1 })
	if a, b := sentTo(s, token(1)), sentTo(s, token(2)); a != 2 || b != 0 {
		t.Fatalf("pushes: alice %d (want 2: one mail, one change), bob %d (want 0: not owned)", a, b)
	}
}

// Ownership moves from a to b: a's push in flight is answered before
// Release returns, and counts; what a had waiting (a change, held for its
// quiet delay) stays in the outbox and b's Claim sends it. One push per
// entry in all.
func TestReleaseThenClaimElsewhereSendsEachOnce(t *testing.T) {
	st, _ := sqliteStore(t, reg("alice", 1, "acct-a", "INBOX", "Notes"))
	ownA, ownB := ownedOf("alice"), ownedOf()
	inFlight, answer := make(chan struct{}), make(chan struct{})
	var once sync.Once
	sa := &funcSender{fn: func(ctx context.Context, n push.Notification) (push.Response, error) {
		once.Do(func() { close(inFlight) })
		select {
		case <-answer:
		case <-ctx.Done():
			return push.Response{}, ctx.Err()
		}
		return push.Response{StatusCode: 200}, nil
	}}
	a := push.New(push.Options{Store: st, Sender: sa, Logger: testLogger(t), Topic: testTopic, Owns: ownA.owns,
		ChangeDelay: time.Hour, RetryBase: time.Millisecond, RetryMax: 5 * time.Millisecond})
	startRun(t, a)
	sb := &funcSender{}
	b := push.New(push.Options{Store: st, Sender: sb, Logger: testLogger(t), Topic: testTopic, Owns: ownB.owns,
		ChangeDelay: time.Millisecond, RetryBase: time.Millisecond, RetryMax: 5 * time.Millisecond})
	startRun(t, b)

	commit(t, st, a, "alice", "INBOX", false)
	recv(t, inFlight, "a's push to be in flight")
	commit(t, st, a, "alice", "Notes", true) // rides along after the push, waits an hour
	waitFor(t, 5*time.Second, "the change to reach a's job", func() bool { return a.Pending() == 1 })

	ownA.set("alice", false)
	released := make(chan error, 2)
	for range 2 { // a second Release waits for the same push
		go func() { released <- a.Release(t.Context(), "alice") }()
	}
	select {
	case err := <-released:
		t.Fatalf("Release returned (%v) with a push of alice in flight", err)
	default:
	}
	close(answer)
	for range 2 {
		if err := recv(t, released, "Release to return"); err != nil {
			t.Fatal(err)
		}
	}
	// The mail's entry was answered and written; the change's is left.
	out, err := st.OutboxOf(t.Context(), "alice")
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 1 || !out[0].Changed {
		t.Fatalf("outbox after Release = %+v, want the change alone", out)
	}
	if a.Pending() != 0 {
		t.Errorf("a still has %d pending for alice", a.Pending())
	}

	ownB.set("alice", true)
	if err := b.Claim(t.Context(), "alice"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "b to send the change", func() bool { return b.Pending() == 0 && len(outboxIDs(t, st)) == 0 })
	if na, nb := len(sa.sent()), len(sb.sent()); na != 1 || nb != 1 {
		t.Fatalf("pushes: a %d, b %d; want one each (the mail by a, the change by b)", na, nb)
	}
	// A late event at a (a watcher not yet stopped) is dropped.
	a.Notify(event.Event{User: "alice", Mailbox: "INBOX", Kind: event.KindNew, ID: 1})
	if a.Pending() != 0 {
		t.Error("a took an event of a user it no longer owns")
	}
}

// A retrying push is dropped by Release and sent by the next owner.
func TestReleaseHandsARetryOver(t *testing.T) {
	st, _ := sqliteStore(t, reg("alice", 1, "acct-a"))
	ownA, ownB := ownedOf("alice"), ownedOf()
	sa := &funcSender{fn: func(context.Context, push.Notification) (push.Response, error) {
		return push.Response{StatusCode: 500}, nil
	}}
	a := push.New(push.Options{Store: st, Sender: sa, Logger: testLogger(t), Topic: testTopic, Owns: ownA.owns,
		RetryBase: time.Hour, RetryMax: time.Hour})
	startRun(t, a)
	commit(t, st, a, "alice", "INBOX", false)
	waitFor(t, 5*time.Second, "a's first attempt", func() bool { return len(sa.sent()) == 1 && a.Pending() == 1 })
	ownA.set("alice", false)
	if err := a.Release(t.Context(), "alice"); err != nil {
		t.Fatal(err)
	}
	if len(outboxIDs(t, st)) != 1 {
		t.Fatal("Release cleared an entry APNs never took")
	}
	sb := &funcSender{}
	b := push.New(push.Options{Store: st, Sender: sb, Logger: testLogger(t), Topic: testTopic, Owns: ownB.owns})
	startRun(t, b)
	ownB.set("alice", true)
	if err := b.Claim(t.Context(), "alice"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "b to send it", func() bool { return b.Pending() == 0 && len(outboxIDs(t, st)) == 0 })
	if len(sb.sent()) != 1 || a.Pending() != 0 {
		t.Fatalf("b sent %d, a has %d pending; want 1 and 0", len(sb.sent()), a.Pending())
	}
}
