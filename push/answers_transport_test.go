package push_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/xapsproxy/xapsproxy/event"
	"github.com/xapsproxy/xapsproxy/internal/apnstest"
	"github.com/xapsproxy/xapsproxy/push"
	"github.com/xapsproxy/xapsproxy/store"
)

// 429 TooManyRequests is about one device: that push waits, for the
// Retry-After APNs sent when it sent one, else for its own backoff; the
// other pushes go on, and nothing is held.
func TestTooManyRequestsBacksOffThatPushOnly(t *testing.T) {
	for _, tc := range []struct {
		name, retryAfter string
		min, max         time.Duration // of the wait before the retry
	}{
		{"RetryAfter", "30", 30 * time.Second, 30 * time.Second},
		{"NoRetryAfter", "", 500 * time.Millisecond, time.Second}, // RetryBase with jitter
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newAPNsEnv(t)
			st := newMemStore(reg("alice", 1, "acct-a"), reg("bob", 2, "acct-b"))
			e.fake.QueueReply(token(1), apnstest.Reply{Status: 429, Reason: "TooManyRequests", RetryAfter: tc.retryAfter})
			clk := newFakeClock()
			_, log := newLogLines(t)
			p := gatedPusher(t, e, st, clk, log)
			startRun(t, p)
			p.Notify(event.Event{User: "alice", Mailbox: "INBOX", Kind: event.KindNew})
			sent := clk.Now()
			var retryAt time.Time
			waitFor(t, 5*time.Second, "the retry to be scheduled", func() bool {
				a := clk.armed()
				if len(a) == 1 {
					retryAt = a[0]
				}
				return len(a) == 1 && len(st.results(token(1))) == 1
			})
			if wait := retryAt.Sub(sent); wait < tc.min || wait > tc.max {
				t.Fatalf("retry after %v; want %v to %v", wait, tc.min, tc.max)
			}
			// Bob's push is not held by alice's.
			p.Notify(event.Event{User: "bob", Mailbox: "INBOX", Kind: event.KindNew})
			waitFor(t, 5*time.Second, "bob's push", func() bool { return len(st.results(token(2))) == 1 })
			if s := p.Stats(); s.Held != "" {
				t.Fatalf("held = %q after a 429; want nothing held", s.Held)
			}
			clk.Advance(retryAt.Sub(clk.Now()))
			waitFor(t, 5*time.Second, "alice's retry", func() bool { return len(st.results(token(1))) == 2 })
			waitIdle(t, p)
			if got := st.results(token(1)); got[0] != "429 TooManyRequests" || got[1] != "200" {
				t.Errorf("alice's outcomes = %q; want 429 then 200", got)
			}
		})
	}
}

// No answer at all — a push that times out, a refused connection — is an
// outage like 5xx: held, probed, and drained once APNs answers.
func TestNoAnswerIsAnOutage(t *testing.T) {
	for _, tc := range []struct {
		name          string
		fail, recover func(*apnstest.Server)
	}{
		{"Timeout", func(s *apnstest.Server) { s.Hold() }, func(s *apnstest.Server) { s.Release() }},
		{"Refused", func(s *apnstest.Server) { s.Stop() }, func(s *apnstest.Server) {
			if err := s.Restart(); err != nil {
				panic(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newAPNsEnv(t)
			var regs []store.Registration
			for i := range 6 {
				regs = append(regs, reg(fmt.Sprintf("user%d", i), i+1, fmt.Sprintf("acct-%d", i)))
			}
			st := newMemStore(regs...)
			clk := newFakeClock()
			lines, log := newLogLines(t)
			p := push.New(push.Options{
				Store: st, Sender: e.sender, Logger: log, Topic: e.creds.Topic, Clock: clk,
				MaxConcurrent: 1, RetryBase: time.Second, RetryMax: time.Minute,
				SendTimeout: 200 * time.Millisecond,
			})
			startRun(t, p)
			tc.fail(e.fake)
			notifyAll(p, regs)
			waitFor(t, 10*time.Second, "the gate to close", func() bool { return p.Stats().Held == "outage" })
			// Their outcomes are written in the background; no more come
			// until the clock reaches the probe.
			waitFor(t, 10*time.Second, "the failures to be recorded", func() bool {
				return count(errorsOf(st, regs), "error") >= push.OutageAfter
			})
			clk.waitArmed(t, clk.Now().Add(time.Second))
			if n := count(errorsOf(st, regs), "error"); n != push.OutageAfter {
				t.Fatalf("%d failed pushes before the gate closed; want %d", n, push.OutageAfter)
			}
			tc.recover(e.fake)
			for p.Stats().Held != "" { // probe until one is answered
				a := clk.armed()
				if len(a) == 1 {
					clk.Advance(a[0].Sub(clk.Now()))
				}
				waitFor(t, 10*time.Second, "a probe to be answered or scheduled", func() bool {
					return p.Stats().Held == "" || len(clk.armed()) == 1 && !clk.armed()[0].Equal(a[0])
				})
			}
			waitIdle(t, p)
			for _, r := range regs {
				if got := st.results(r.DeviceToken); count(got, "200") != 1 {
					t.Errorf("%s's outcomes = %q; want one 200", r.User, got)
				}
			}
			if n := lines.count("APNs is not answering"); n != 1 {
				t.Errorf("%d lines say APNs is not answering; want 1", n)
			}
		})
	}
}

// errorsOf is "error" for each recorded outcome that got no answer.
func errorsOf(st *memStore, regs []store.Registration) []string {
	var out []string
	for _, r := range regs {
		for _, res := range st.results(r.DeviceToken) {
			if len(res) >= 6 && res[:6] == "error:" {
				out = append(out, "error")
			}
		}
	}
	return out
}

// APNs's GOAWAY (maintenance, a connection too old) costs no push: every
// device gets its push once, pushes after it go on a new connection.
func TestGoAwayLosesNoPush(t *testing.T) {
	e := newAPNsEnv(t)
	var regs []store.Registration
	for i := range 40 {
		regs = append(regs, reg(fmt.Sprintf("user%02d", i), i+1, fmt.Sprintf("acct-%d", i)))
	}
	st := newMemStore(regs...)
	p := push.New(push.Options{Store: st, Sender: e.sender, Logger: testLogger(t), Topic: e.creds.Topic,
		RetryBase: 5 * time.Millisecond, RetryMax: 20 * time.Millisecond})
	startRun(t, p)
	notifyAll(p, regs[:20])
	e.fake.WaitAnswered(t, 20, 5*time.Second)
	conns := e.fake.Connections()
	e.fake.GoAway()
	notifyAll(p, regs[20:])
	waitIdle(t, p)
	for _, r := range regs {
		if got := st.results(r.DeviceToken); len(got) != 1 || got[0] != "200" {
			t.Errorf("%s's outcomes = %q; want one 200", r.User, got)
		}
	}
	if e.fake.Connections() <= conns {
		t.Errorf("no new connection after GOAWAY (%d before, %d after)", conns, e.fake.Connections())
	}
}
