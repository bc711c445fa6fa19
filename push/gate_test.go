package push_test

// The gate holds every push while APNs as a whole cannot take them (see
// gate.go). These tests hold it to what it promises: one device alone never
// closes it, what it holds still expires, and it sends one probe at a time.

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/xapsproxy/xapsproxy/event"
	"github.com/xapsproxy/xapsproxy/push"
	"github.com/xapsproxy/xapsproxy/store"
)

// A device whose pushes keep getting no answer backs off on its own: its
// failures, however many in a row, do not close the gate, even when no
// other push goes meanwhile (a small server), and other users' new mail is
// pushed at once.
func TestOneFailingDeviceDoesNotCloseTheGate(t *testing.T) {
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
	for i := 1; i <= push.OutageAfter; i++ {
		// Run arms its timer again only once it has taken in the failure.
		waitFor(t, 5*time.Second, fmt.Sprintf("failure %d to be taken in", i), func() bool {
			return len(s.sent()) == i && len(clk.armed()) == 1
		})
		if held := p.Stats().Held; held != "" {
			t.Fatalf("after %d failures of one device the gate is closed (%q); want it open", i, held)
		}
		if i < push.OutageAfter {
			clk.Advance(clk.armed()[0].Sub(clk.Now())) // to the retry
		}
	}
	p.Notify(event.Event{User: "good", Mailbox: "INBOX", Kind: event.KindNew})
	waitFor(t, 5*time.Second, "good's new mail to be pushed with no clock advance", func() bool {
		for _, n := range s.sent() {
			if n.DeviceToken == token(2) {
				return true
			}
		}
		return false
	})
}

// A push held by the closed gate still expires: when APNs takes pushes
// again, one held past its expiration is given up, not sent with an
// apns-expiration already gone (and its outbox entry not kept for it
// meanwhile). Bob's new mail, held or not, is fresh and goes.
func TestHeldPushesExpire(t *testing.T) {
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
	// Whether Run takes bob's event in before or after the recheck is due,
	// his push is the one to probe with: alice's has expired by then.
	p.Notify(event.Event{User: "bob", Mailbox: "INBOX", Kind: event.KindNew})
	refuse.Store(false) // the operator fixes the certificate
	clk.Advance(time.Minute)
	waitFor(t, 5*time.Second, "the gate to open", func() bool { return p.Stats().Held == "" })
	waitIdle(t, p)
	now := clk.Now()
	bob := false
	for _, n := range s.sent()[1:] {
		if n.Expiration.Before(now) {
			t.Errorf("push to %s sent %v after its expiration", n.DeviceToken[:4], now.Sub(n.Expiration))
		}
		bob = bob || n.DeviceToken == token(2)
	}
	if !bob {
		t.Errorf("bob's new mail was not pushed; sent %d", len(s.sent()))
	}
}

// While the gate is closed one probe at a time is in flight. That holds
// also when the gate opens (on the answer of a push that was in flight
// before it closed) and closes again while the probe is still out: Run
// then waits for the probe's answer and sets no time to send a second one;
// when the probe is answered, the backlog goes.
func TestOneProbeInFlight(t *testing.T) {
	var regs []store.Registration
	for i := range 5 {
		regs = append(regs, reg(string(rune('a'+i)), i+1, "acct"))
	}
	st := newMemStore(regs...)
	release4 := make(chan struct{})
	answerProbe := make(chan struct{})
	probeHung := make(chan string, 1)
	var back atomic.Bool // APNs answers everything
	var mu sync.Mutex
	calls := map[string]int{}
	hung := false
	s := &funcSender{fn: func(ctx context.Context, n push.Notification) (push.Response, error) {
		mu.Lock()
		calls[n.DeviceToken]++
		hang := calls[n.DeviceToken] > 1 && !hung
		hung = hung || hang
		mu.Unlock()
		switch {
		case n.DeviceToken == token(4):
			select {
			case <-release4:
				return push.Response{StatusCode: 200}, nil
			case <-ctx.Done():
				return push.Response{}, ctx.Err()
			}
		case hang: // the first probe gets no answer until answerProbe
			probeHung <- n.DeviceToken
			select {
			case <-answerProbe:
				return push.Response{StatusCode: 200}, nil
			case <-ctx.Done():
				return push.Response{}, ctx.Err()
			}
		case back.Load():
			return push.Response{StatusCode: 200}, nil
		}
		return push.Response{StatusCode: 503}, nil
	}}
	clk := newFakeClock()
	t0 := clk.Now()
	p := push.New(push.Options{Store: st, Sender: s, Logger: testLogger(t), Topic: testTopic, Clock: clk,
		RetryBase: time.Second, RetryMax: time.Minute})
	startRun(t, p)
	p.Notify(event.Event{User: "d", Mailbox: "INBOX", Kind: event.KindNew})
	waitFor(t, 5*time.Second, "d's push in flight", func() bool { return len(s.sent()) == 1 })
	for _, u := range []string{"a", "b", "c"} {
		p.Notify(event.Event{User: u, Mailbox: "INBOX", Kind: event.KindNew})
	}
	waitFor(t, 5*time.Second, "the gate to close", func() bool { return p.Stats().Held == "outage" })
	clk.waitArmed(t, t0.Add(time.Second)) // the first probe
	clk.Advance(time.Second)
	probe := recv(t, probeHung, "the probe to be in flight")
	close(release4)
	waitFor(t, 5*time.Second, "the gate to open", func() bool { return p.Stats().Held == "" })
	p.Notify(event.Event{User: "e", Mailbox: "INBOX", Kind: event.KindNew})
	waitFor(t, 5*time.Second, "the gate to close again", func() bool { return p.Stats().Held == "outage" })
	before := len(s.sent())

	// Run has taken in all that came before once it has looked up an
	// event reported after: Pending drops back to the four jobs (a, b, c
	// and e; d's is done) when the outcomes are written and the event of
	// a user with no device is dropped.
	const jobs = 4
	waitFor(t, 5*time.Second, "the outcomes to be written", func() bool { return p.Pending() == jobs })
	p.Notify(event.Event{User: "nobody", Mailbox: "INBOX", Kind: event.KindNew})
	waitFor(t, 5*time.Second, "the event after to be looked up", func() bool { return p.Pending() == jobs })
	if a := clk.armed(); len(a) != 0 {
		t.Fatalf("with a probe in flight, Run waits to send another at +%v; want it to wait for the answer", a[0].Sub(clk.Now()))
	}

	back.Store(true)
	close(answerProbe)
	waitIdle(t, p)
	got := map[string]int{}
	for _, n := range s.sent()[before:] {
		got[n.DeviceToken]++
	}
	if len(got) != jobs-1 || got[probe] != 0 {
		t.Fatalf("after the probe's answer, pushes went to %v; want one to each of the three others", got)
	}
	for tok, n := range got {
		if n != 1 {
			t.Errorf("%d pushes to %s after the probe's answer; want 1", n, tok[:4])
		}
	}
}
