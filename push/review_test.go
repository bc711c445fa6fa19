package push_test

// Tests written in review of the durable outbox and the APNs gate. Each
// fails on the code as committed; see the comment of each for the finding.

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/xapsproxy/xapsproxy/event"
	"github.com/xapsproxy/xapsproxy/push"
	"github.com/xapsproxy/xapsproxy/store"
)

// A push cut short by shutdown is kept in its job, due at once, for the
// next Run. When Run is started again on the same Pusher, loadOutbox reads
// the same entry back as an event; the job is dispatched in Run's first
// iteration, before that event's look-up comes back, so the event finds the
// job running, sets again, and the same notification is pushed twice.
func TestReviewRunRestartSendsACutShortPushOnce(t *testing.T) {
	st, _ := sqliteStore(t, reg("alice", 1, "acct-a"))
	var cut atomic.Bool
	cut.Store(true)
	entered := make(chan struct{}, 1)
	s := &funcSender{fn: func(ctx context.Context, n push.Notification) (push.Response, error) {
		if cut.Load() {
			select {
			case entered <- struct{}{}:
			default:
			}
			<-ctx.Done() // held until shutdown
			return push.Response{}, ctx.Err()
		}
		return push.Response{StatusCode: 200}, nil
	}}
	p := fastPusher(t, st, s)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- p.Run(ctx) }()
	commit(t, st, p, "alice", "INBOX", false)
	<-entered
	cancel()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}

	cut.Store(false)
	before := len(s.sent())
	startRun(t, p) // the same Pusher, as after a transient restart of Run
	waitFor(t, 5*time.Second, "the outbox to empty", func() bool { return p.Pending() == 0 && len(outboxIDs(t, st)) == 0 })
	time.Sleep(50 * time.Millisecond) // let a second push, if any, go
	if n := len(s.sent()) - before; n != 1 {
		t.Fatalf("the restarted Run sent %d pushes for one mail; want 1", n)
	}
}

// An entry older than Expiration is dropped by loadOutbox without looking
// at p.refs: if a job still holds it (here: a job held by the closed gate
// whose expiration was renewed by a later event in another mailbox), the
// entry is removed from the store while that job is still waiting to send
// it. A crash then loses the INBOX push.
func TestReviewLoadOutboxKeepsEntriesHeldByJobs(t *testing.T) {
	st, _ := sqliteStore(t, reg("alice", 1, "acct-a", "INBOX", "Notes"))
	var refuse atomic.Bool
	refuse.Store(true)
	s := &funcSender{fn: func(ctx context.Context, n push.Notification) (push.Response, error) {
		if refuse.Load() {
			return push.Response{StatusCode: 403, Reason: "BadCertificate"}, nil
		}
		return push.Response{StatusCode: 200}, nil
	}}
	clk := newFakeClock()
	p := push.New(push.Options{Store: st, Sender: s, Logger: testLogger(t), Topic: testTopic, Clock: clk,
		RetryBase: time.Second, RetryMax: time.Minute, Expiration: 10 * time.Second, CredentialRecheck: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- p.Run(ctx) }()

	inbox, err := st.CommitMailbox(t.Context(), "alice", "INBOX", nil, &store.OutboxEntry{At: clk.Now()})
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
	time.Sleep(50 * time.Millisecond) // the Notes event joins the held job
	clk.Advance(4 * time.Second)      // INBOX's entry is 12 s old, the job's notification 4 s
	cancel()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}

	startRun(t, p)
	time.Sleep(100 * time.Millisecond) // loadOutbox, then the recorder
	if p.Pending() == 0 {
		t.Fatal("the held job is gone")
	}
	ids := outboxIDs(t, st)
	if len(ids) != 2 {
		t.Fatalf("outbox = %v while the job holding [%d %d] still waits; want both kept", ids, inbox, notes)
	}
}

// slowRegs blocks RegistrationsOf while block is set.
type slowRegs struct {
	*memStore
	block   atomic.Bool
	blocked chan struct{}
	release chan struct{}
}

func (s *slowRegs) RegistrationsOf(ctx context.Context, users []string) (map[string][]store.Registration, error) {
	if s.block.Load() {
		s.blocked <- struct{}{}
		<-s.release
	}
	return s.memStore.RegistrationsOf(ctx, users)
}

// Pending counts the events being looked up (p.resolving), but every
// countJobs (called by finish) sets it to 0, even while the look-up started
// by takeEvents is still running on its goroutine. Pending then reports 0
// with an event not yet pushed, and serve's drain at shutdown stops
// waiting: the event's push is left to the next process (or lost, for an
// event with no outbox entry).
func TestReviewPendingCountsEventsBeingLookedUp(t *testing.T) {
	st := &slowRegs{memStore: newMemStore(reg("alice", 1, "acct-a"), reg("bob", 2, "acct-b")),
		blocked: make(chan struct{}), release: make(chan struct{})}
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
	<-inFlight
	st.block.Store(true)
	p.Notify(event.Event{User: "bob", Mailbox: "INBOX", Kind: event.KindNew})
	<-st.blocked // bob's look-up is running
	close(answer)
	waitFor(t, 5*time.Second, "alice's outcome to be written", func() bool { return len(st.results(token(1))) == 1 })
	time.Sleep(20 * time.Millisecond)
	if n := p.Pending(); n == 0 {
		t.Fatal("Pending() = 0 while bob's event is still being looked up")
	}
}

// "A failure of one device alone only backs that push off" (the commit
// message; gate.go): but failures are counted per answer, not per device,
// so one device whose pushes get no answer trips the gate by itself when
// nothing else is pushed meanwhile (a small server), and then every other
// user's new mail waits for a probe.
func TestReviewOneBadDeviceDoesNotHoldOthers(t *testing.T) {
	st := newMemStore(reg("bad", 1, "acct-a"), reg("good", 2, "acct-b"))
	s := &funcSender{fn: func(ctx context.Context, n push.Notification) (push.Response, error) {
		if n.DeviceToken == token(1) {
			return push.Response{}, context.DeadlineExceeded // this device's pushes time out
		}
		return push.Response{StatusCode: 200}, nil
	}}
	clk := newFakeClock()
	p := push.New(push.Options{Store: st, Sender: s, Logger: testLogger(t), Topic: testTopic, Clock: clk,
		RetryBase: time.Second, RetryMax: time.Minute})
	startRun(t, p)
	p.Notify(event.Event{User: "bad", Mailbox: "INBOX", Kind: event.KindNew})
	for i := 1; i <= 3; i++ {
		waitFor(t, 5*time.Second, "a failed attempt", func() bool { return len(s.sent()) == i })
		time.Sleep(10 * time.Millisecond)
		clk.Advance(4 * time.Second)
	}
	waitFor(t, 5*time.Second, "three failures", func() bool { return len(s.sent()) >= 3 })
	time.Sleep(20 * time.Millisecond)
	held := p.Stats().Held
	before := len(s.sent())
	p.Notify(event.Event{User: "good", Mailbox: "INBOX", Kind: event.KindNew})
	time.Sleep(200 * time.Millisecond) // no clock advance: new mail goes at once
	for _, n := range s.sent()[before:] {
		if n.DeviceToken == token(2) {
			return
		}
	}
	t.Fatalf("good's new mail not pushed at once (gate: %q): one device's failures hold everyone", held)
}

// While the gate is closed, a job's expiration is not looked at until it is
// sent as a probe: with the credential refused (one probe a minute by
// default), held notifications outlive their expiration, keep their outbox
// entries, and are sent after their apns-expiration when APNs is back.
func TestReviewHeldPushesExpire(t *testing.T) {
	st := newMemStore(reg("alice", 1, "acct-a"), reg("bob", 2, "acct-b"))
	var refuse atomic.Bool
	refuse.Store(true)
	s := &funcSender{fn: func(ctx context.Context, n push.Notification) (push.Response, error) {
		if refuse.Load() {
			return push.Response{StatusCode: 403, Reason: "BadCertificate"}, nil
		}
		return push.Response{StatusCode: 200}, nil
	}}
	clk := newFakeClock()
	p := push.New(push.Options{Store: st, Sender: s, Logger: testLogger(t), Topic: testTopic, Clock: clk,
		MaxConcurrent: 1, RetryBase: time.Second, RetryMax: time.Minute, Expiration: 10 * time.Second, CredentialRecheck: time.Minute})
	startRun(t, p)
	p.Notify(event.Event{User: "alice", Mailbox: "INBOX", Kind: event.KindNew})
	waitFor(t, 5*time.Second, "the 403", func() bool { return p.Stats().Held == "credential" })
	p.Notify(event.Event{User: "bob", Mailbox: "INBOX", Kind: event.KindNew})
	time.Sleep(50 * time.Millisecond)
	refuse.Store(false) // the operator fixes the certificate
	clk.Advance(time.Minute)
	waitFor(t, 5*time.Second, "the gate to open", func() bool { return p.Stats().Held == "" })
	waitIdle(t, p)
	now := clk.Now()
	for _, n := range s.sent()[1:] {
		if n.Expiration.Before(now) {
			t.Errorf("push to %s sent %v after its expiration", n.DeviceToken[:4], now.Sub(n.Expiration))
		}
	}
}

// The gate opens on the 200 of a push that was in flight when it closed;
// *g = gate{} also clears probing while the probe is still in flight. If
// the gate closes again before that probe is answered, a second probe goes
// beside it.
func TestReviewOneProbeInFlight(t *testing.T) {
	var regs []store.Registration
	for i := range 5 {
		regs = append(regs, reg(string(rune('a'+i)), i+1, "acct"))
	}
	st := newMemStore(regs...)
	release4 := make(chan struct{})
	var mu sync.Mutex
	calls := map[string]int{}
	hung := false
	probeHung := make(chan struct{})
	s := &funcSender{fn: func(ctx context.Context, n push.Notification) (push.Response, error) {
		mu.Lock()
		calls[n.DeviceToken]++
		first := calls[n.DeviceToken] == 1
		hang := !first && !hung
		if hang {
			hung = true
		}
		mu.Unlock()
		switch {
		case n.DeviceToken == token(4):
			select {
			case <-release4:
				return push.Response{StatusCode: 200}, nil
			case <-ctx.Done():
				return push.Response{}, ctx.Err()
			}
		case hang: // the first probe gets no answer for now
			close(probeHung)
			<-ctx.Done()
			return push.Response{}, ctx.Err()
		}
		return push.Response{StatusCode: 503}, nil
	}}
	clk := newFakeClock()
	p := push.New(push.Options{Store: st, Sender: s, Logger: testLogger(t), Topic: testTopic, Clock: clk,
		RetryBase: time.Second, RetryMax: time.Minute})
	startRun(t, p)
	p.Notify(event.Event{User: "d", Mailbox: "INBOX", Kind: event.KindNew})
	waitFor(t, 5*time.Second, "d's push in flight", func() bool { return len(s.sent()) == 1 })
	for _, u := range []string{"a", "b", "c"} {
		p.Notify(event.Event{User: u, Mailbox: "INBOX", Kind: event.KindNew})
	}
	waitFor(t, 5*time.Second, "the gate to close", func() bool { return p.Stats().Held == "outage" })
	time.Sleep(20 * time.Millisecond)
	clk.Advance(time.Second)
	<-probeHung // one probe in flight, unanswered
	close(release4)
	waitFor(t, 5*time.Second, "the gate to open", func() bool { return p.Stats().Held == "" })
	p.Notify(event.Event{User: "e", Mailbox: "INBOX", Kind: event.KindNew})
	waitFor(t, 5*time.Second, "the gate to close again", func() bool { return p.Stats().Held == "outage" })
	time.Sleep(20 * time.Millisecond)
	before := len(s.sent())
	clk.Advance(2 * time.Second)
	time.Sleep(100 * time.Millisecond)
	if n := len(s.sent()) - before; n > 0 {
		t.Fatalf("%d more probes sent while the first is still in flight; want one probe at a time", n)
	}
}

// Events that come while a push is in flight ride on its retry (foldAgain),
// but keep the expiration of the older notification: when that expires,
// the job is given up with them, although they are fresh. (schedule renews
// the expiration for events that come while the job waits to retry.)
func TestReviewEventsFoldedIntoARetryKeepTheirOwnExpiration(t *testing.T) {
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
	<-first
	clk.Advance(9 * time.Second)
	p.Notify(event.Event{User: "alice", Mailbox: "Notes", Kind: event.KindNew}) // valid until +19 s
	time.Sleep(50 * time.Millisecond)
	close(release) // 503: retried within a second, with Notes folded in
	waitFor(t, 5*time.Second, "the retry to be scheduled", func() bool { return len(clk.armed()) == 1 })
	clk.Advance(time.Second) // +10 s: the retry gets 503 and INBOX's notification expires
	waitFor(t, 5*time.Second, "the second attempt", func() bool { return len(s.sent()) == 2 })
	time.Sleep(50 * time.Millisecond)
	ok.Store(true) // APNs is back
	for range 8 {
		clk.Advance(time.Second)
		time.Sleep(10 * time.Millisecond)
	}
	for _, n := range s.sent()[2:] {
		for _, m := range n.Mailboxes {
			if m == "Notes" {
				return
			}
		}
	}
	t.Fatalf("the new mail in Notes (9 s before INBOX's push expired, valid for 10 s) was never pushed; sent %d", len(s.sent()))
}
