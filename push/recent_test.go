package push_test

import (
	"slices"
	"testing"
	"time"

	"github.com/xapsproxy/xapsproxy/event"
	"github.com/xapsproxy/xapsproxy/push"
	"github.com/xapsproxy/xapsproxy/store"
)

// The recent pushes of a user record what Apple answered: status, reason
// and apns-id, the kind of push and the mailboxes it named, with the
// device token's short form only.
func TestRecentPushesRecordAnswers(t *testing.T) {
	e := newAPNsEnv(t)
	st := newMemStore(reg("alice", 1, "acct-a", "INBOX"), reg("alice", 2, "acct-b", "INBOX"))
	e.fake.SetResponse(token(2), 400, "DeviceTokenNotForTopic")
	var pr prunes
	p := newPusher(t, e, st, &pr, time.Minute)
	startRun(t, p)
	p.Notify(event.Event{User: "alice", Mailbox: "INBOX", Kind: event.KindNew})
	reqs := e.fake.WaitRequests(t, 2, 5*time.Second)
	waitIdle(t, p)
	results, err := p.TestPush(t.Context(), "alice")
	if err != nil || len(results) != 2 {
		t.Fatalf("TestPush = %v, %v", results, err)
	}
	reqs = e.fake.WaitRequests(t, 4, 5*time.Second)
	ids := map[string][]string{} // token -> apns-ids answered, in order
	for _, r := range reqs {
		ids[r.Token] = append(ids[r.Token], r.APNsID)
	}

	got := p.RecentPushes("alice")
	if len(got) != 4 {
		t.Fatalf("%d recent pushes, want 4: %+v", len(got), got)
	}
	// Newest first: the two test pushes, then the two for new mail.
	for _, r := range got[:2] {
		if r.Kind != push.PushTest {
			t.Errorf("push %+v: kind %q, want %q", r, r.Kind, push.PushTest)
		}
	}
	for _, r := range got[2:] {
		if r.Kind != push.PushNewMail || !slices.Equal(r.Mailboxes, []string{"INBOX"}) {
			t.Errorf("push %+v: want new mail in INBOX", r)
		}
	}
	for _, r := range got {
		full := map[string]string{store.ShortToken(token(1)): token(1), store.ShortToken(token(2)): token(2)}[r.Token]
		switch {
		case full == "":
			t.Errorf("push %+v: token is not a short token of alice's", r)
		case full == token(1) && (r.Status != 200 || r.Reason != "" || r.Action != push.Delivered || r.AccountID != "acct-a"):
			t.Errorf("push %+v: want 200 for acct-a", r)
		case full == token(2) && (r.Status != 400 || r.Reason != "DeviceTokenNotForTopic" || r.Action != push.Rejected):
			t.Errorf("push %+v: want 400 DeviceTokenNotForTopic", r)
		}
		if full != "" && (r.APNsID == "" || !slices.Contains(ids[full], r.APNsID)) {
			t.Errorf("push %+v: apns-id %q is not one the fake answered %q", r, r.APNsID, ids[full])
		}
		if r.At.IsZero() || r.Error != "" {
			t.Errorf("push %+v: want a time and no error", r)
		}
	}
	if p.RecentPushes("bob") != nil {
		t.Error("bob, never pushed to, has recent pushes")
	}
}

// A push Apple did not answer is recorded with the transport error.
func TestRecentPushesRecordErrors(t *testing.T) {
	e := newAPNsEnv(t)
	st := newMemStore(reg("alice", 1, "acct-a", "INBOX"))
	var pr prunes
	p := newPusher(t, e, st, &pr, time.Minute)
	e.fake.Stop()
	if _, err := p.TestPush(t.Context(), "alice"); err != nil {
		t.Fatal(err)
	}
	got := p.RecentPushes("alice")
	if len(got) != 1 || got[0].Error == "" || got[0].Status != 0 || got[0].Action != push.Retry {
		t.Errorf("recent pushes = %+v, want one with an error and no status", got)
	}
}
