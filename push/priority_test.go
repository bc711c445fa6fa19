package push_test

import (
	"testing"
	"time"

	"github.com/xapsproxy/xapsproxy/event"
	"github.com/xapsproxy/xapsproxy/push"
)

// No apns-priority header by default, as the reference daemon sends (APNs
// then assumes 10); Options.Priority sets one on every push.
func TestPriorityHeader(t *testing.T) {
	for _, tc := range []struct {
		priority int
		want     string
	}{{0, ""}, {5, "5"}, {10, "10"}} {
		e := newAPNsEnv(t)
		st := newMemStore(reg("alice", 1, "acct", "INBOX"))
		p := push.New(push.Options{Store: st, Sender: e.sender, Logger: testLogger(t), Topic: e.creds.Topic,
			RetryBase: 5 * time.Millisecond, RetryMax: 20 * time.Millisecond, Priority: tc.priority})
		startRun(t, p)
		p.Notify(event.Event{User: "alice", Mailbox: "INBOX", Kind: event.KindNew})
		waitIdle(t, p)
		reqs := e.fake.Requests()
		if len(reqs) != 1 {
			t.Fatalf("priority %d: %d requests, want 1", tc.priority, len(reqs))
		}
		got, sent := reqs[0].Header["Apns-Priority"]
		switch {
		case tc.want == "" && sent:
			t.Errorf("priority 0: apns-priority %q sent, want none", got)
		case tc.want != "" && (len(got) != 1 || got[0] != tc.want):
			t.Errorf("priority %d: apns-priority %q, want %q", tc.priority, got, tc.want)
		}
	}
}
