package push_test

// A push is owed until APNs has answered it or it has expired: these tests
// hold the Pusher to that across a restart of Run, while events are being
// looked up, and for events that ride on a retry.

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/xapsproxy/xapsproxy/event"
	"github.com/xapsproxy/xapsproxy/push"
	"github.com/xapsproxy/xapsproxy/store"
)

// recv waits for a value from ch, failing the test after 5 s.
func recv[T any](t testing.TB, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(5 * time.Second):
		t.Fatalf("timed out after 5s waiting for %s", what)
	}
	var zero T
	return zero
}

// runStoppable runs p until stop is called (or the test ends). stop waits
// for Run to return, which it does once its recorder has written what it
// was handed: the store then shows everything that Run did.
func runStoppable(t *testing.T, p *push.Pusher) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- p.Run(ctx) }()
	var once sync.Once
	stop = func() {
		t.Helper()
		once.Do(func() {
			cancel()
			if err := recv(t, errc, "Run to return"); err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// A push cut short by shutdown stays in its job, due at once, and the next
// Run of the same Pusher sends it, once: that Run must not also take the
// push's outbox entry back as a new event (the outbox is read once in a
// Pusher's life, and never for an entry a job holds), which would find the
// job in flight and push the same notification again.
func TestRunRestartSendsACutShortPushOnce(t *testing.T) {
	st, _ := sqliteStore(t, reg("alice", 1, "acct-a"))
	var cut atomic.Bool
	cut.Store(true)
	inFlight := make(chan struct{})
	var once sync.Once
	s := &funcSender{fn: func(ctx context.Context, n push.Notification) (push.Response, error) {
		if cut.Load() {
			once.Do(func() { close(inFlight) })
			<-ctx.Done() // held until shutdown
			return push.Response{}, ctx.Err()
		}
		return push.Response{StatusCode: 200}, nil
	}}
	p := fastPusher(t, st, s)
	stop := runStoppable(t, p)
	commit(t, st, p, "alice", "INBOX", false)
	recv(t, inFlight, "the push to be in flight")
	stop()

	cut.Store(false)
	before := len(s.sent())
	startRun(t, p) // the same Pusher, as after a transient restart of Run
	// Pending counts the events not yet looked up and the jobs: at 0, all
	// that the restarted Run had to send has been sent.
	waitFor(t, 5*time.Second, "the outbox to empty", func() bool { return p.Pending() == 0 && len(outboxIDs(t, st)) == 0 })
	if n := len(s.sent()) - before; n != 1 {
		t.Fatalf("the restarted Run sent %d pushes for one mail; want 1", n)
	}
}

// An outbox entry stays in the store as long as a job holds it, however
// old it is: here a job held by the closed gate, whose notification a later
// event in another mailbox renewed, still owes the INBOX push when Run is
// restarted with that entry past Expiration. Were the entry dropped as
// expired, a crash would lose the push.
func TestRunRestartKeepsOutboxEntriesHeldByJobs(t *testing.T) {
	st, _ := sqliteStore(t, reg("alice", 1, "acct-a", "INBOX", "Notes"))
	s := &funcSender{fn: func(ctx context.Context, n push.Notification) (push.Response, error) {
		return push.Response{StatusCode: 403, Reason: "BadCertificate"}, nil
	}}
	clk := newFakeClock()
	t0 := clk.Now()
	p := push.New(push.Options{Store: st, Sender: s, Logger: testLogger(t), Topic: testTopic, Clock: clk,
		RetryBase: time.Second, RetryMax: time.Minute, Expiration: 10 * time.Second, CredentialRecheck: time.Hour})
	stop := runStoppable(t, p)

	inbox, err := st.CommitMailbox(t.Context(), "alice", "INBOX", nil, &store.OutboxEntry{At: t0})
	if err != nil {
		t.Fatal(err)
	}
	p.Notify(event.Event{User: "alice", Mailbox: "INBOX", Kind: event.KindNew, ID: inbox})
	waitFor(t, 5*time.Second, "the 403", func() bool { return len(s.sent()) == 1 && p.Stats().Held == "credential" })

	clk.Advance(8 * time.Second)
	notes, err := st.CommitMailbox(t.Context(), "alice", "Notes", nil, &store.OutboxEntry{At: clk.Now()})
	if err != nil {
		t.Fatal(err)
	}
	p.Notify(event.Event{User: "alice", Mailbox: "Notes", Kind: event.KindNew, ID: notes})
	// The event counts in Pending until it has joined alice's held job,
	// and so does the 403's outcome until it is written: then only the
	// job is left.
	waitFor(t, 5*time.Second, "the Notes event to join the held job", func() bool { return p.Pending() == 1 })
	clk.Advance(4 * time.Second) // INBOX's entry is 12 s old, the job's notification 4 s
	stop()

	// The restarted Run has taken in the outbox once it waits for the next
	// credential check; stopping it waits for its writes.
	stop = runStoppable(t, p)
	clk.waitArmed(t, t0.Add(time.Hour))
	stop()
	if p.Pending() == 0 {
		t.Fatal("the held job is gone")
	}
	if ids := outboxIDs(t, st); len(ids) != 2 {
		t.Fatalf("outbox = %v while the job holding [%d %d] still waits; want both kept", ids, inbox, notes)
	}
}

// slowRegs holds RegistrationsOf while hold is set, until release is
// closed; entered is closed when a held look-up has started.
type slowRegs struct {
	*memStore
	hold    atomic.Bool
	once    sync.Once
	entered chan struct{}
	release chan struct{}
}

func (s *slowRegs) RegistrationsOf(ctx context.Context, users []string) (map[string][]store.Registration, error) {
	if s.hold.Load() {
		s.once.Do(func() { close(s.entered) })
		<-s.release
	}
	return s.memStore.RegistrationsOf(ctx, users)
}

// Pending counts the events whose registrations are being looked up, also
// while other pushes finish meanwhile: serve's drain at shutdown waits for
// Pending to reach 0, and stopping earlier would leave such an event's push
// to the next process (or lose it, for an event with no outbox entry).
func TestPendingCountsEventsBeingLookedUp(t *testing.T) {
	st := &slowRegs{memStore: newMemStore(reg("alice", 1, "acct-a"), reg("bob", 2, "acct-b")),
		entered: make(chan struct{}), release: make(chan struct{})}
	var once sync.Once
	inFlight := make(chan struct{})
	answer := make(chan struct{})
	s := &funcSender{fn: func(ctx context.Context, n push.Notification) (push.Response, error) {
		if n.DeviceToken == token(1) {
			once.Do(func() { close(inFlight) })
			<-answer
		}
		return push.Response{StatusCode: 200}, nil
	}}
	p := fastPusher(t, st, s)
	startRun(t, p)
	defer close(st.release)
	p.Notify(event.Event{User: "alice", Mailbox: "INBOX", Kind: event.KindNew})
	recv(t, inFlight, "alice's push to be in flight")
	st.hold.Store(true)
	p.Notify(event.Event{User: "bob", Mailbox: "INBOX", Kind: event.KindNew})
	recv(t, st.entered, "bob's look-up to start")
	close(answer)
	// Alice's job counts until Run has taken in her answer, and her
	// outcome until it is written: below 2, both are done.
	waitFor(t, 5*time.Second, "alice's push to be done", func() bool {
		return len(st.results(token(1))) == 1 && p.Pending() <= 1
	})
	if n := p.Pending(); n != 1 {
		t.Fatalf("Pending() = %d while bob's event is still being looked up; want 1", n)
	}
}

// Events that come while a push is in flight ride on its retry, which then
// lives as long as they would on their own: the retry is not given up when
// the older notification expires, and the fresh events are pushed.
func TestEventsFoldedIntoARetryKeepTheirOwnExpiration(t *testing.T) {
	st := newMemStore(reg("alice", 1, "acct-a", "INBOX", "Notes"))
	var ok atomic.Bool
	first := make(chan struct{})
	release := make(chan struct{})
	var once sync.Once
	s := &funcSender{fn: func(ctx context.Context, n push.Notification) (push.Response, error) {
		once.Do(func() { close(first); <-release })
		if ok.Load() {
			return push.Response{StatusCode: 200}, nil
		}
		return push.Response{StatusCode: 503}, nil
	}}
	clk := newFakeClock()
	p := push.New(push.Options{Store: st, Sender: s, Logger: testLogger(t), Topic: testTopic, Clock: clk,
		RetryBase: time.Second, RetryMax: time.Minute, Expiration: 10 * time.Second})
	startRun(t, p)
	p.Notify(event.Event{User: "alice", Mailbox: "INBOX", Kind: event.KindNew})
	recv(t, first, "INBOX's push to be in flight")
	clk.Advance(9 * time.Second)
	p.Notify(event.Event{User: "alice", Mailbox: "Notes", Kind: event.KindNew}) // valid until +19 s
	// Pending counts the Notes event until it has joined the job in flight.
	waitFor(t, 5*time.Second, "the Notes event to join the push in flight", func() bool { return p.Pending() == 1 })
	close(release) // 503: retried within a second, with Notes folded in
	waitFor(t, 5*time.Second, "the retry to be scheduled", func() bool { return len(clk.armed()) == 1 })
	clk.Advance(time.Second) // +10 s: the retry gets 503 and INBOX's notification expires
	// Run has taken in the second answer once it waits for the next retry,
	// or once the job is gone.
	waitFor(t, 5*time.Second, "the second answer to be taken in", func() bool {
		return len(s.sent()) == 2 && (len(clk.armed()) == 1 || p.Pending() == 0)
	})
	if p.Pending() == 0 {
		t.Fatal("the retry carrying the new mail in Notes (9 s old, valid for 10 s) was given up with INBOX's expired notification")
	}
	ok.Store(true) // APNs is back
	clk.Advance(clk.armed()[0].Sub(clk.Now()))
	waitIdle(t, p)
	sent := s.sent()
	if len(sent) != 3 || !slices.Contains(sent[2].Mailboxes, "Notes") {
		t.Fatalf("sent %+v; want a third push naming Notes", sent)
	}
}
