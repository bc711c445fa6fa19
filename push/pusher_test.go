package push_test

import (
	"context"
	"errors"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/xapsproxy/xapsproxy/event"
	"github.com/xapsproxy/xapsproxy/internal/apnstest"
	"github.com/xapsproxy/xapsproxy/push"
	"github.com/xapsproxy/xapsproxy/store"
)

func reg(user string, tok int, account string, mailboxes ...string) store.Registration {
	if len(mailboxes) == 0 {
		mailboxes = []string{"INBOX"}
	}
	now := time.Now()
	return store.Registration{
		User: user, DeviceToken: token(tok), AccountID: account, Subtopic: "com.apple.mobilemail",
		Mailboxes: mailboxes, Version: 2, Topic: testTopic, Registered: now, Renewed: now,
	}
}

// newPusher makes a Pusher over the fake APNs with fast timings.
func newPusher(t *testing.T, e *apnsEnv, st store.Store, pr *prunes, change time.Duration) *push.Pusher {
	t.Helper()
	return push.New(push.Options{
		Store:       st,
		Sender:      e.sender,
		Logger:      testLogger(t),
		OnPrune:     pr.add,
		Topic:       e.creds.Topic,
		ChangeDelay: change,
		RetryBase:   5 * time.Millisecond,
		RetryMax:    20 * time.Millisecond,
	})
}

func TestNewMailPushesOnlyRegistrationsOfTheMailbox(t *testing.T) {
	e := newAPNsEnv(t)
	st := newMemStore(
		reg("alice", 1, "acct-inbox", "INBOX", "Work"),
		reg("alice", 2, "acct-archive", "Archive"),
		reg("bob", 3, "acct-bob"),
	)
	var pr prunes
	p := newPusher(t, e, st, &pr, time.Minute)
	startRun(t, p)

	p.Notify(event.Event{User: "alice", Mailbox: "inbox", Kind: event.KindNew}) // INBOX is case-insensitive
	waitIdle(t, p)

	reqs := e.fake.Requests()
	if len(reqs) != 1 {
		t.Fatalf("got %d requests, want exactly 1: %+v", len(reqs), reqs)
	}
	if reqs[0].Token != token(1) || reqs[0].AccountID != "acct-inbox" || reqs[0].Topic != testTopic {
		t.Errorf("pushed token %s account %s topic %s", reqs[0].Token, reqs[0].AccountID, reqs[0].Topic)
	}
	// Named as registered ("INBOX"), not as the event spelled it.
	if want := []string{apnstest.MailboxHash("INBOX")}; !slices.Equal(reqs[0].Mailboxes, want) {
		t.Errorf("m = %q, want %q", reqs[0].Mailboxes, want)
	}
	if got := st.results(token(1)); !slices.Equal(got, []string{"200"}) {
		t.Errorf("recorded %q, want [200]", got)
	}
	if got := st.results(token(2)); len(got) != 0 {
		t.Errorf("recorded %q for the Archive registration, want nothing", got)
	}
}

func TestDeadTokensArePruned(t *testing.T) {
	for _, tc := range []struct {
		status int
		reason string
	}{
		{410, "Unregistered"},
		{400, "BadDeviceToken"},
	} {
		t.Run(tc.reason, func(t *testing.T) {
			e := newAPNsEnv(t)
			// The same phone registered for two users; APNs's answer kills both.
			st := newMemStore(reg("alice", 1, "acct-a"), reg("bob", 1, "acct-b"), reg("alice", 2, "acct-a2"))
			e.fake.SetResponse(token(1), tc.status, tc.reason)
			var pr prunes
			p := newPusher(t, e, st, &pr, time.Minute)
			startRun(t, p)

			p.Notify(event.Event{User: "alice", Mailbox: "INBOX", Kind: event.KindNew})
			waitIdle(t, p)

			if st.has("alice", token(1)) || st.has("bob", token(1)) {
				t.Error("registrations of the dead token were kept")
			}
			if !st.has("alice", token(2)) {
				t.Error("alice's other registration was deleted")
			}
			if got := pr.get(); !slices.Equal(got, []string{"alice", "bob"}) {
				t.Errorf("OnPrune called with %q, want [alice bob]", got)
			}
			want := []string{push.Response{StatusCode: tc.status, Reason: tc.reason}.String()}
			if got := st.results(token(1)); !slices.Equal(got, want) {
				t.Errorf("recorded %q, want %q", got, want)
			}
			if n := len(e.fake.Requests()); n != 2 {
				t.Errorf("%d requests, want 2 (one per alice registration), no retry", n)
			}
		})
	}
}

func TestDeviceTokenNotForTopicIsKept(t *testing.T) {
	e := newAPNsEnv(t)
	st := newMemStore(reg("alice", 1, "acct-a"))
	e.fake.SetResponse(token(1), 400, "DeviceTokenNotForTopic")
	var pr prunes
	p := newPusher(t, e, st, &pr, time.Minute)
	startRun(t, p)

	p.Notify(event.Event{User: "alice", Mailbox: "INBOX", Kind: event.KindNew})
	waitIdle(t, p)

	if !st.has("alice", token(1)) {
		t.Error("registration deleted after DeviceTokenNotForTopic")
	}
	if got := pr.get(); len(got) != 0 {
		t.Errorf("OnPrune called with %q", got)
	}
	if got := st.results(token(1)); !slices.Equal(got, []string{"400 DeviceTokenNotForTopic"}) {
		t.Errorf("recorded %q", got)
	}
	if n := len(e.fake.Requests()); n != 1 {
		t.Errorf("%d requests, want 1 (not retried)", n)
	}
}

func TestTransientFailuresAreRetried(t *testing.T) {
	for _, tc := range []struct {
		status int
		reason string
	}{
		{500, "InternalServerError"},
		{503, "ServiceUnavailable"},
		{429, "TooManyRequests"},
	} {
		t.Run(tc.reason, func(t *testing.T) {
			e := newAPNsEnv(t)
			st := newMemStore(reg("alice", 1, "acct-a"))
			e.fake.QueueResponse(token(1), tc.status, tc.reason)
			e.fake.QueueResponse(token(1), tc.status, tc.reason)
			var pr prunes
			p := newPusher(t, e, st, &pr, time.Minute)
			startRun(t, p)

			p.Notify(event.Event{User: "alice", Mailbox: "INBOX", Kind: event.KindNew})
			waitIdle(t, p)

			failure := push.Response{StatusCode: tc.status, Reason: tc.reason}.String()
			if got, want := st.results(token(1)), []string{failure, failure, "200"}; !slices.Equal(got, want) {
				t.Errorf("recorded %q, want %q", got, want)
			}
			reqs := e.fake.Requests()
			if len(reqs) != 3 {
				t.Fatalf("%d requests, want 3", len(reqs))
			}
			if !reqs[0].Expiration.Equal(reqs[2].Expiration) {
				t.Errorf("retry changed apns-expiration from %v to %v", reqs[0].Expiration, reqs[2].Expiration)
			}
		})
	}
}

func TestTransportErrorsAreRetriedUntilExpiry(t *testing.T) {
	st := newMemStore(reg("alice", 1, "acct-a"))
	s := &funcSender{fn: func(context.Context, push.Notification) (push.Response, error) {
		return push.Response{}, errors.New("connection refused")
	}}
	p := push.New(push.Options{
		Store: st, Sender: s, Logger: testLogger(t),
		RetryBase: time.Millisecond, RetryMax: 4 * time.Millisecond, Expiration: 40 * time.Millisecond,
	})
	startRun(t, p)
	p.Notify(event.Event{User: "alice", Mailbox: "INBOX", Kind: event.KindNew})
	waitIdle(t, p)

	got := st.results(token(1))
	if len(got) < 2 {
		t.Fatalf("recorded %q, want several retries", got)
	}
	for _, r := range got {
		if r != "error: connection refused" {
			t.Errorf("recorded %q, want \"error: connection refused\"", r)
		}
	}
	calls := s.sent()
	if !calls[0].Expiration.Equal(calls[len(calls)-1].Expiration) {
		t.Errorf("retries changed the expiration")
	}
}

func TestChangesAreCoalescedUntilQuiet(t *testing.T) {
	e := newAPNsEnv(t)
	st := newMemStore(reg("alice", 1, "acct-a"), reg("alice", 2, "acct-b"))
	var pr prunes
	const delay = 50 * time.Millisecond
	p := newPusher(t, e, st, &pr, delay)
	startRun(t, p)

	start := time.Now()
	var last time.Time // just before the last change
	for range 5 {
		last = time.Now()
		p.Notify(event.Event{User: "alice", Mailbox: "INBOX", Kind: event.KindChanged})
	}
	waitIdle(t, p)

	reqs := e.fake.Requests()
	if len(reqs) != 2 {
		t.Fatalf("%d requests after 5 changes on 2 registrations, want 2", len(reqs))
	}
	for _, r := range reqs {
		if wait := r.Received.Sub(last); wait < delay {
			t.Errorf("push %v after the last change (%v after the first), want at least %v", wait, r.Received.Sub(start), delay)
		}
	}
}

func TestNewMailDoesNotWaitForChanges(t *testing.T) {
	e := newAPNsEnv(t)
	st := newMemStore(reg("alice", 1, "acct-a"))
	var pr prunes
	p := newPusher(t, e, st, &pr, time.Hour) // a change alone would wait an hour

	// Reported before Run, so that Run sees them together (a change reported
	// while the push is in flight would rightly get a push of its own).
	p.Notify(event.Event{User: "alice", Mailbox: "INBOX", Kind: event.KindChanged})
	p.Notify(event.Event{User: "alice", Mailbox: "INBOX", Kind: event.KindNew})
	p.Notify(event.Event{User: "alice", Mailbox: "INBOX", Kind: event.KindChanged})
	startRun(t, p)
	waitIdle(t, p)
	if n := len(e.fake.Requests()); n != 1 {
		t.Errorf("%d requests, want 1", n)
	}
}

// gateSender blocks every Send until release is closed (or ctx is done).
type gateSender struct {
	release chan struct{}
	mu      sync.Mutex
	started int
	calls   []push.Notification
}

func (g *gateSender) Send(ctx context.Context, n push.Notification) (push.Response, error) {
	g.mu.Lock()
	g.started++
	g.calls = append(g.calls, n)
	g.mu.Unlock()
	select {
	case <-g.release:
		return push.Response{StatusCode: 200}, nil
	case <-ctx.Done():
		return push.Response{}, ctx.Err()
	}
}

func (g *gateSender) count() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.started
}

func TestEventsDuringAPushGiveOneMorePush(t *testing.T) {
	st := newMemStore(reg("alice", 1, "acct-a", "INBOX", "Notes", "Work"))
	g := &gateSender{release: make(chan struct{})}
	p := push.New(push.Options{Store: st, Sender: g, Logger: testLogger(t), ChangeDelay: time.Millisecond})
	startRun(t, p)

	p.Notify(event.Event{User: "alice", Mailbox: "INBOX", Kind: event.KindNew})
	waitFor(t, 5*time.Second, "the first push to start", func() bool { return g.count() == 1 })
	for range 3 {
		p.Notify(event.Event{User: "alice", Mailbox: "Notes", Kind: event.KindNew})
		p.Notify(event.Event{User: "alice", Mailbox: "Work", Kind: event.KindChanged})
	}
	// Let the loop fold the events into the running job before releasing.
	waitFor(t, 5*time.Second, "the events to be looked up", func() bool { return p.Pending() == 1 })
	if n := g.count(); n != 1 {
		t.Fatalf("%d pushes in flight for one registration, want 1", n)
	}
	close(g.release)
	waitIdle(t, p)
	if n := g.count(); n != 2 {
		t.Fatalf("%d pushes, want 2 (the first and one for everything during it)", n)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if first, second := g.calls[0].Mailboxes, g.calls[1].Mailboxes; !slices.Equal(first, []string{"INBOX"}) ||
		!slices.Equal(second, []string{"Notes", "Work"}) {
		t.Errorf("pushes named %q then %q, want [INBOX] then [Notes Work]", first, second)
	}
}

func TestRunStopsAllGoroutinesAndKeepsWork(t *testing.T) {
	base := runtime.NumGoroutine()
	var regs []store.Registration
	for i := range 5 {
		regs = append(regs, reg("alice", i+1, "acct"))
	}
	st := newMemStore(regs...)
	g := &gateSender{release: make(chan struct{})}
	p := push.New(push.Options{Store: st, Sender: g, Logger: testLogger(t), MaxConcurrent: 2})

	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- p.Run(ctx) }()
	p.Notify(event.Event{User: "alice", Mailbox: "INBOX", Kind: event.KindNew})
	waitFor(t, 5*time.Second, "two pushes in flight", func() bool { return g.count() == 2 })
	if err := p.Run(ctx); err == nil {
		t.Error("a second concurrent Run succeeded")
	}
	if n := g.count(); n != 2 {
		t.Errorf("%d pushes in flight, want MaxConcurrent = 2", n)
	}

	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	waitFor(t, 5*time.Second, "goroutines to return to the baseline", func() bool {
		return runtime.NumGoroutine() <= base
	})
	if n := p.Pending(); n != 5 {
		t.Errorf("Pending() = %d after shutdown, want the 5 unsent pushes kept", n)
	}
	if got := st.results(token(1)); len(got) != 0 {
		t.Errorf("interrupted push recorded %q", got)
	}

	// A later Run sends what was left.
	close(g.release)
	startRun(t, p)
	waitIdle(t, p)
	for i := range 5 {
		if got := st.results(token(i + 1)); !slices.Equal(got, []string{"200"}) {
			t.Errorf("token %d: recorded %q, want [200]", i+1, got)
		}
	}
}

func TestNotifyNeverBlocksWithoutRun(t *testing.T) {
	p := push.New(push.Options{Store: newMemStore(), Sender: &funcSender{}})
	for i := range 1000 {
		p.Notify(event.Event{User: "alice", Mailbox: []string{"INBOX", "Work"}[i%2], Kind: event.KindNew})
	}
	if n := p.Pending(); n != 2 {
		t.Errorf("Pending() = %d, want 2 (merged per user and mailbox)", n)
	}
}

func TestStoreErrorsAreRetried(t *testing.T) {
	st := newMemStore(reg("alice", 1, "acct-a"))
	st.failReg = 2
	s := &funcSender{}
	p := push.New(push.Options{Store: st, Sender: s, Logger: testLogger(t), RetryBase: time.Millisecond})
	startRun(t, p)
	p.Notify(event.Event{User: "alice", Mailbox: "INBOX", Kind: event.KindNew})
	waitIdle(t, p)
	if n := len(s.sent()); n != 1 {
		t.Errorf("%d pushes after store errors, want 1", n)
	}
}

func TestTopicComesFromRegistrationOrOptions(t *testing.T) {
	withTopic := reg("alice", 1, "acct-a")
	withTopic.Topic = "com.example.registered"
	without := reg("alice", 2, "acct-b")
	without.Topic = ""
	s := &funcSender{}
	p := push.New(push.Options{Store: newMemStore(withTopic, without), Sender: s, Logger: testLogger(t), Topic: "com.example.default"})
	if _, err := p.PushUser(t.Context(), "alice"); err != nil {
		t.Fatal(err)
	}
	calls := s.sent()
	if len(calls) != 2 || calls[0].Topic != "com.example.registered" || calls[1].Topic != "com.example.default" {
		t.Errorf("topics %+v, want the registration's, then the default", calls)
	}
}

func TestPushUser(t *testing.T) {
	e := newAPNsEnv(t)
	st := newMemStore(reg("alice", 1, "acct-a", "Notes", "INBOX"), reg("alice", 2, "acct-b", "Archive", "Work"), reg("bob", 3, "acct-bob"))
	e.fake.SetResponse(token(2), 410, "Unregistered")
	var pr prunes
	p := newPusher(t, e, st, &pr, time.Minute) // no Run needed

	results, err := p.PushUser(t.Context(), "alice")
	if err != nil {
		t.Fatal(err)
	}
	if len(results) != 2 {
		t.Fatalf("%d results, want 2: %+v", len(results), results)
	}
	for i, want := range []struct {
		token, account, outcome string
		action                  push.Action
	}{
		{token(1), "acct-a", "200", push.Delivered},
		{token(2), "acct-b", "410 Unregistered", push.Pruned},
	} {
		r := results[i]
		if r.User != "alice" || r.DeviceToken != want.token || r.AccountID != want.account ||
			r.Outcome() != want.outcome || r.Action != want.action || r.Err != nil {
			t.Errorf("result %d = %+v (%s), want %+v", i, r, r.Outcome(), want)
		}
	}
	if st.has("alice", token(2)) || !st.has("alice", token(1)) {
		t.Error("want the 410 registration deleted and the other kept")
	}
	if got := pr.get(); !slices.Equal(got, []string{"alice"}) {
		t.Errorf("OnPrune called with %q", got)
	}
	reqs := e.fake.Requests()
	if len(reqs) != 2 {
		t.Fatalf("%d requests, want 2", len(reqs))
	}
	// A test push names INBOX, or else the first registered mailbox.
	for i, want := range []string{"INBOX", "Archive"} {
		if got := reqs[i].Mailboxes; !slices.Equal(got, []string{apnstest.MailboxHash(want)}) {
			t.Errorf("push %d: m = %q, want MD5 of %s", i+1, got, want)
		}
	}

	none, err := p.PushUser(t.Context(), "nobody")
	if err != nil || len(none) != 0 {
		t.Errorf("PushUser(nobody) = %v, %v; want no results", none, err)
	}
}
