package push_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/xapsproxy/xapsproxy/config"
	"github.com/xapsproxy/xapsproxy/internal/apnstest"
	"github.com/xapsproxy/xapsproxy/internal/testpki"
	"github.com/xapsproxy/xapsproxy/push"
)

// sendAll sends n pushes at once through a and fails the test for any that
// is not answered 200.
func sendAll(t *testing.T, a *push.APNs, n int) {
	t.Helper()
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			if resp, err := a.Send(context.Background(), note(i%256)); err != nil || resp.StatusCode != 200 {
				t.Errorf("push %d: %+v, %v", i, resp, err)
			}
		})
	}
	wg.Wait()
}

// connectionsUsed counts the requests each connection of the fake carried.
func connectionsUsed(reqs []apnstest.Request) map[int]int {
	used := map[int]int{}
	for _, r := range reqs {
		used[r.Conn]++
	}
	return used
}

// Pushes in flight together are spread over the configured connections,
// one TCP connection each, however many pushes start at once.
func TestAPNsSpreadsPushesOverConnections(t *testing.T) {
	e := newAPNsEnv(t)
	a := newSender(t, e, 4)
	e.fake.Hold()
	done := make(chan struct{})
	go func() {
		defer close(done)
		sendAll(t, a, 200)
	}()
	reqs := e.fake.WaitRequests(t, 200, 10*time.Second)
	used := connectionsUsed(reqs)
	if e.fake.Connections() != 4 || len(used) != 4 {
		t.Errorf("%d connections, requests on %v; want 4 connections, each carrying some", e.fake.Connections(), used)
	}
	for conn, n := range used {
		if n < 20 {
			t.Errorf("connection %d carried %d of 200 pushes in flight: %v", conn, n, used)
		}
	}
	e.fake.Release()
	<-done

	// One push at a time needs one connection only.
	before := len(reqs)
	for range 5 {
		if resp, err := a.Send(t.Context(), note(1)); err != nil || resp.StatusCode != 200 {
			t.Fatalf("push: %+v, %v", resp, err)
		}
	}
	if used := connectionsUsed(e.fake.Requests()[before:]); len(used) != 1 {
		t.Errorf("5 pushes one after another went over connections %v, want one", used)
	}
	if e.fake.Connections() != 4 {
		t.Errorf("%d connections after the pushes, want the 4 kept open", e.fake.Connections())
	}

	// Close closes them all; the next pushes reconnect. A connection counts
	// as idle only once its client has done with the last answer, which it
	// may still be doing when Send has returned: hence Close until closed.
	waitFor(t, 5*time.Second, "the connections to close", func() bool {
		a.Close()
		return e.fake.OpenConnections() == 0
	})
	sendAll(t, a, 10)
}

func TestNewAPNsConnections(t *testing.T) {
	e := newAPNsEnv(t)
	for _, n := range []int{-1, config.MaxAPNsConnections + 1} {
		cfg := e.cfg
		cfg.Connections = n
		if _, err := push.NewAPNs(e.creds, cfg); err == nil {
			t.Errorf("NewAPNs with %d connections succeeded", n)
		}
	}
	// 0 is the default; NewAPNs connects to nothing.
	e.cfg.Connections = 0
	if _, err := push.NewAPNs(e.creds, e.cfg); err != nil {
		t.Errorf("NewAPNs with 0 connections: %v", err)
	}
	if e.fake.Connections() != 0 {
		t.Errorf("NewAPNs connected %d times", e.fake.Connections())
	}
}

// tokenEnv is a fake APNs with token authentication and the credentials
// for it.
type tokenEnv struct {
	fake  *apnstest.Server
	cfg   config.APNS
	creds *push.Credentials
}

func newTokenEnv(t *testing.T, connections int) (*tokenEnv, *push.APNs) {
	t.Helper()
	ca := testpki.NewCA(t)
	dir := t.TempDir()
	key, p8 := testpki.WriteP8Key(t, dir, "AuthKey_KEYID12345")
	e := &tokenEnv{fake: apnstest.StartToken(t, ca, testTopic, &key.PublicKey, "KEYID12345", "TEAMID1234")}
	e.cfg = config.APNS{
		TokenKeyFile: p8, KeyID: "KEYID12345", TeamID: "TEAMID1234", Topic: testTopic,
		Endpoint: e.fake.URL, CAFile: ca.WriteCA(t, dir), Connections: connections,
	}
	var err error
	if e.creds, err = push.LoadCredentials(e.cfg, time.Now()); err != nil {
		t.Fatal(err)
	}
	a, err := push.NewAPNs(e.creds, e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Close)
	return e, a
}

// Every connection signs with the one provider token: APNs answers 429
// TooManyProviderTokenUpdates to a provider that renews it more often than
// every 20 minutes.
func TestAPNsTokenIsSharedByAllConnections(t *testing.T) {
	e, a := newTokenEnv(t, 4)
	e.fake.Hold()
	done := make(chan struct{})
	go func() {
		defer close(done)
		sendAll(t, a, 200)
	}()
	reqs := e.fake.WaitRequests(t, 200, 10*time.Second)
	e.fake.Release()
	<-done
	if used := connectionsUsed(reqs); len(used) != 4 {
		t.Errorf("requests on connections %v, want 4", used)
	}
	if auths := e.fake.Authorizations(); len(auths) != 1 {
		t.Errorf("200 pushes over 4 connections carried %d distinct tokens, want 1", len(auths))
	}
}

// ExpiredProviderToken makes a token at least 20 minutes old be signed
// anew; a younger one is kept, as APNs would refuse its renewal.
func TestAPNsRenewsAnExpiredProviderToken(t *testing.T) {
	e, a := newTokenEnv(t, 2)
	pushTwice := func() {
		t.Helper()
		e.fake.QueueResponse(token(1), 403, "ExpiredProviderToken")
		if resp, err := a.Send(t.Context(), note(1)); err != nil || resp.String() != "403 ExpiredProviderToken" {
			t.Fatalf("push: %v, %v; want 403 ExpiredProviderToken", resp, err)
		}
		if resp, err := a.Send(t.Context(), note(1)); err != nil || resp.StatusCode != 200 {
			t.Fatalf("push after it: %v, %v", resp, err)
		}
	}
	pushTwice()
	if n := len(e.fake.Authorizations()); n != 1 {
		t.Errorf("a token signed just now was renewed: %d distinct tokens", n)
	}

	tok := e.creds.Token
	tok.Lock()
	tok.IssuedAt = time.Now().Add(-21 * time.Minute).Unix()
	tok.Unlock()
	pushTwice()
	auths := e.fake.Authorizations()
	if len(auths) != 2 {
		t.Fatalf("%d distinct tokens, want a new one after ExpiredProviderToken", len(auths))
	}
	reqs := e.fake.Requests()
	if reqs[2].Authorization != auths[0] || reqs[3].Authorization != auths[1] {
		t.Errorf("the new token was not used from the push after the 403 on")
	}
}
