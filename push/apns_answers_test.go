package push_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/xapsproxy/xapsproxy/internal/apnstest"
	"github.com/xapsproxy/xapsproxy/push"
)

// What APNs.Send returns for each answer APNs gives, through the real
// client: the Response the scheduler classifies, and an error only when no
// answer came.

func note(i int) push.Notification {
	return push.Notification{DeviceToken: token(i), Topic: testTopic, AccountID: "acct", Expiration: time.Now().Add(24 * time.Hour)}
}

// newSender is another APNs client for e's fake, with connections
// connections.
func newSender(t testing.TB, e *apnsEnv, connections int) *push.APNs {
	t.Helper()
	cfg := e.cfg
	cfg.Connections = connections
	a, err := push.NewAPNs(e.creds, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Close)
	return a
}

func TestAPNsAnswers(t *testing.T) {
	e := newAPNsEnv(t)
	for _, tc := range []struct {
		reply apnstest.Reply
		want  push.Response // APNsID is only checked to be set
	}{
		{apnstest.Reply{Status: 200}, push.Response{StatusCode: 200}},
		{apnstest.Reply{Status: 400, Reason: "BadDeviceToken"}, push.Response{StatusCode: 400, Reason: "BadDeviceToken"}},
		{apnstest.Reply{Status: 400, Reason: "DeviceTokenNotForTopic"}, push.Response{StatusCode: 400, Reason: "DeviceTokenNotForTopic"}},
		{apnstest.Reply{Status: 403, Reason: "BadCertificate"}, push.Response{StatusCode: 403, Reason: "BadCertificate"}},
		{apnstest.Reply{Status: 403, Reason: "InvalidProviderToken"}, push.Response{StatusCode: 403, Reason: "InvalidProviderToken"}},
		// With certificate authentication there is no token to renew.
		{apnstest.Reply{Status: 403, Reason: "ExpiredProviderToken"}, push.Response{StatusCode: 403, Reason: "ExpiredProviderToken"}},
		{apnstest.Reply{Status: 410, Reason: "Unregistered"}, push.Response{StatusCode: 410, Reason: "Unregistered"}},
		{apnstest.Reply{Status: 413, Reason: "PayloadTooLarge"}, push.Response{StatusCode: 413, Reason: "PayloadTooLarge"}},
		{apnstest.Reply{Status: 429, Reason: "TooManyRequests"}, push.Response{StatusCode: 429, Reason: "TooManyRequests"}},
		{apnstest.Reply{Status: 429, Reason: "TooManyRequests", RetryAfter: "30"}, push.Response{StatusCode: 429, Reason: "TooManyRequests", RetryAfter: 30 * time.Second}},
		{apnstest.Reply{Status: 500, Reason: "InternalServerError"}, push.Response{StatusCode: 500, Reason: "InternalServerError"}},
		{apnstest.Reply{Status: 503, Reason: "ServiceUnavailable"}, push.Response{StatusCode: 503, Reason: "ServiceUnavailable"}},
		{apnstest.Reply{Status: 503, Reason: "Shutdown", RetryAfter: "5"}, push.Response{StatusCode: 503, Reason: "Shutdown", RetryAfter: 5 * time.Second}},
	} {
		e.fake.QueueReply(token(1), tc.reply)
		resp, err := e.sender.Send(t.Context(), note(1))
		if err != nil {
			t.Errorf("%d %s: error %v, want the answer", tc.reply.Status, tc.reply.Reason, err)
			continue
		}
		if resp.APNsID == "" {
			t.Errorf("%d %s: no apns-id", tc.reply.Status, tc.reply.Reason)
		}
		resp.APNsID = ""
		if resp != tc.want {
			t.Errorf("%d %s: response %+v, want %+v", tc.reply.Status, tc.reply.Reason, resp, tc.want)
		}
	}
}

func TestAPNsRetryAfter(t *testing.T) {
	e := newAPNsEnv(t)
	future := time.Now().Add(90 * time.Second).UTC().Format(http.TimeFormat)
	past := time.Now().Add(-time.Hour).UTC().Format(http.TimeFormat)
	for _, tc := range []struct {
		header   string
		min, max time.Duration
	}{
		{"120", 120 * time.Second, 120 * time.Second},
		{"0", 0, 0},
		{future, 85 * time.Second, 90 * time.Second}, // the date has whole seconds
		{past, 0, 0},
		{"soon", 0, 0},
		{"-5", 0, 0},
		{"1.5", 0, 0},
		{"86400", time.Hour, time.Hour}, // capped
		{"99999999999999999999999", time.Hour, time.Hour},                                    // capped, not an overflow
		{time.Now().Add(48 * time.Hour).UTC().Format(http.TimeFormat), time.Hour, time.Hour}, // capped
	} {
		e.fake.QueueReply(token(2), apnstest.Reply{Status: 429, Reason: "TooManyRequests", RetryAfter: tc.header})
		resp, err := e.sender.Send(t.Context(), note(2))
		if err != nil || resp.StatusCode != 429 {
			t.Fatalf("Retry-After %q: %v, %v", tc.header, resp, err)
		}
		if resp.RetryAfter < tc.min || resp.RetryAfter > tc.max {
			t.Errorf("Retry-After %q: RetryAfter %v, want %v to %v", tc.header, resp.RetryAfter, tc.min, tc.max)
		}
	}
	// The header of one answer does not leak into the next.
	if resp, err := e.sender.Send(t.Context(), note(2)); err != nil || resp.StatusCode != 200 || resp.RetryAfter != 0 {
		t.Errorf("200 after a 429: %+v, %v", resp, err)
	}
}

// A push APNs does not answer ends with the caller's deadline, and the
// connection stays usable.
func TestAPNsTimeout(t *testing.T) {
	e := newAPNsEnv(t)
	e.fake.Hold()
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	resp, err := e.sender.Send(ctx, note(1))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("held push: %+v, %v; want context.DeadlineExceeded", resp, err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Send returned %v after its 200ms deadline", d)
	}
	e.fake.WaitAbandoned(t, 1, 5*time.Second)
	e.fake.Release()
	if resp, err := e.sender.Send(t.Context(), note(1)); err != nil || resp.StatusCode != 200 {
		t.Errorf("push after the timeout: %+v, %v", resp, err)
	}
	if e.fake.Answered() != 1 || e.fake.Connections() != 1 {
		t.Errorf("%d answered over %d connections, want 1 over 1", e.fake.Answered(), e.fake.Connections())
	}
}

func TestAPNsConnectionRefused(t *testing.T) {
	e := newAPNsEnv(t)
	if resp, err := e.sender.Send(t.Context(), note(1)); err != nil || resp.StatusCode != 200 {
		t.Fatalf("first push: %+v, %v", resp, err)
	}
	e.fake.Stop()
	// The kept connection is gone and no new one can be made: an error
	// naming no URL (the caller logs the token), not a panic or a status.
	resp, err := e.sender.Send(t.Context(), note(1))
	if err == nil || !strings.HasPrefix(err.Error(), "post to apns: ") || strings.Contains(err.Error(), e.fake.URL) {
		t.Errorf("push to a stopped APNs: %+v, %v", resp, err)
	}
	fresh := newSender(t, e, 1)
	if _, err := fresh.Send(t.Context(), note(1)); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("push from a new client to a stopped APNs: %v, want connection refused", err)
	}

	if err := e.fake.Restart(); err != nil {
		t.Fatal(err)
	}
	for _, a := range []*push.APNs{e.sender, fresh} {
		if resp, err := a.Send(t.Context(), note(1)); err != nil || resp.StatusCode != 200 {
			t.Errorf("push after APNs is back: %+v, %v", resp, err)
		}
	}
}

// GOAWAY, as Apple sends before maintenance: pushes before, during and
// after it are all answered 200, each exactly once, the later ones over new
// connections.
func TestAPNsGoAway(t *testing.T) {
	e := newAPNsEnv(t)
	a := newSender(t, e, 2)
	burst := func(from, n int) {
		t.Helper()
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				if resp, err := a.Send(context.Background(), note((from+i)%256)); err != nil || resp.StatusCode != 200 {
					t.Errorf("push %d: %+v, %v", from+i, resp, err)
				}
			})
		}
		wg.Wait()
	}
	burst(0, 50)
	before := e.fake.Connections()

	// GOAWAY with pushes held on the old connections and more pushes
	// started right after it, some of which race it onto them.
	e.fake.Hold()
	var wg sync.WaitGroup
	wg.Go(func() { burst(100, 20) })
	e.fake.WaitRequests(t, 70, 5*time.Second)
	e.fake.GoAway()
	wg.Go(func() { burst(200, 20) })
	e.fake.WaitRequests(t, 90, 5*time.Second)
	e.fake.Release()
	wg.Wait()

	burst(300, 50)
	if got := e.fake.Count(); got != 140 {
		t.Errorf("the fake got %d pushes, want 140: none lost or sent twice", got)
	}
	if e.fake.Answered() != 140 {
		t.Errorf("%d pushes answered, want 140", e.fake.Answered())
	}
	if after := e.fake.Connections(); after <= before {
		t.Errorf("%d connections after GOAWAY, %d before: want new ones", after, before)
	}
	var old, fresh int
	for _, r := range e.fake.Requests()[90:] {
		if r.Conn <= before {
			old++
		} else {
			fresh++
		}
	}
	if old != 0 || fresh != 50 {
		t.Errorf("pushes after GOAWAY: %d on old connections, %d on new ones; want 0 and 50", old, fresh)
	}
}
