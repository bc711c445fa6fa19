package push_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/xapsproxy/xapsproxy/event"
	"github.com/xapsproxy/xapsproxy/push"
)

// observations is a push.Observer that keeps what it is given.
type observations struct {
	mu sync.Mutex
	v  []float64
}

func (o *observations) Observe(v float64) {
	o.mu.Lock()
	o.v = append(o.v, v)
	o.mu.Unlock()
}

func (o *observations) values() []float64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]float64(nil), o.v...)
}

// SendLatency is given, for each push APNs answered, the time Send took;
// a push that got no answer is retried and not measured.
func TestSendLatencyIsObservedForAnswers(t *testing.T) {
	const answerAfter = 20 * time.Millisecond
	var mu sync.Mutex
	failed := false
	s := &funcSender{fn: func(ctx context.Context, n push.Notification) (push.Response, error) {
		mu.Lock()
		fail := n.DeviceToken == token(2) && !failed
		failed = failed || fail
		mu.Unlock()
		if fail {
			return push.Response{}, errors.New("connection reset")
		}
		select { // APNs takes its time to answer
		case <-time.After(answerAfter):
		case <-ctx.Done():
			return push.Response{}, ctx.Err()
		}
		return push.Response{StatusCode: 200}, nil
	}}
	var obs observations
	p := push.New(push.Options{
		Store: newMemStore(reg("alice", 1, "acct-a"), reg("alice", 2, "acct-b")), Sender: s,
		Logger: testLogger(t), Topic: testTopic, SendLatency: &obs,
		ChangeDelay: time.Millisecond, RetryBase: time.Millisecond, RetryMax: 5 * time.Millisecond,
	})
	startRun(t, p)
	p.Notify(event.Event{User: "alice", Mailbox: "INBOX", Kind: event.KindNew})
	waitIdle(t, p)
	if n := len(s.sent()); n != 3 {
		t.Fatalf("%d sends, want 3 (one failed and retried)", n)
	}
	got := obs.values()
	if len(got) != 2 {
		t.Fatalf("%d latencies observed, want 2 (the answered pushes): %v", len(got), got)
	}
	for _, v := range got {
		if v < answerAfter.Seconds() || v > 10 {
			t.Errorf("latency %v s, want at least %v s (the fake's answer time) and sane", v, answerAfter.Seconds())
		}
	}
}
