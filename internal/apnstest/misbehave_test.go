package apnstest_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"net/http"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sideshow/apns2/token"

	"github.com/xapsproxy/xapsproxy/internal/apnstest"
	"github.com/xapsproxy/xapsproxy/internal/testpki"
)

// send posts a good push with ctx and returns the status, or the error.
func send(ctx context.Context, c *http.Client, base string, header map[string]string) (*http.Response, error) {
	r := goodRequest()
	req, err := http.NewRequestWithContext(ctx, r.method, base+r.path, strings.NewReader(r.body))
	if err != nil {
		return nil, err
	}
	for k, v := range r.header {
		req.Header.Set(k, v)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	resp.Body.Close()
	return resp, nil
}

func TestReplyCarriesRetryAfter(t *testing.T) {
	ca := testpki.NewCA(t)
	s := apnstest.Start(t, ca, topic)
	c := client(t, ca, true)

	s.QueueReply(goodToken, apnstest.Reply{Status: 429, Reason: "TooManyRequests", RetryAfter: "120"})
	s.SetDefaultReply(apnstest.Reply{Status: 503, Reason: "ServiceUnavailable", RetryAfter: "Wed, 21 Oct 2065 07:28:00 GMT"})
	resp, err := send(t.Context(), c, s.URL, nil)
	if err != nil || resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "120" {
		t.Fatalf("queued reply: %v %v, want 429 with Retry-After 120", resp, err)
	}
	resp, err = send(t.Context(), c, s.URL, nil)
	if err != nil || resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "Wed, 21 Oct 2065 07:28:00 GMT" {
		t.Fatalf("default reply: %v %v, want 503 with the date", resp, err)
	}
	s.SetDefault(200, "")
	if resp, err = send(t.Context(), c, s.URL, nil); err != nil || resp.StatusCode != 200 || resp.Header.Get("Retry-After") != "" {
		t.Fatalf("after SetDefault(200): %v %v", resp, err)
	}
}

func TestDelayAndAbandonedAnswers(t *testing.T) {
	ca := testpki.NewCA(t)
	s := apnstest.Start(t, ca, topic)
	c := client(t, ca, true)

	s.SetDelay(200 * time.Millisecond)
	start := time.Now()
	if resp, err := send(t.Context(), c, s.URL, nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("delayed push: %v %v", resp, err)
	}
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Errorf("answered after %v, want at least the 200ms delay", d)
	}

	// A client that gives up first gets no answer, and none is counted.
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	s.SetDelay(time.Hour)
	if _, err := send(ctx, c, s.URL, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("push delayed by an hour with a 50ms deadline: %v, want the deadline", err)
	}
	s.WaitAbandoned(t, 1, 5*time.Second)
	reqs := s.Requests()
	if !reqs[0].Answered || reqs[1].Answered || s.Answered() != 1 {
		t.Errorf("answered %v %v, count %d; want the first only", reqs[0].Answered, reqs[1].Answered, s.Answered())
	}

	// A reply's own delay adds to SetDelay's.
	s.SetDelay(0)
	s.QueueReply(goodToken, apnstest.Reply{Status: 200, Delay: 100 * time.Millisecond})
	start = time.Now()
	if resp, err := send(t.Context(), c, s.URL, nil); err != nil || resp.StatusCode != 200 || time.Since(start) < 100*time.Millisecond {
		t.Errorf("reply delay: %v %v after %v", resp, err, time.Since(start))
	}
}

func TestHoldAndRelease(t *testing.T) {
	ca := testpki.NewCA(t)
	s := apnstest.Start(t, ca, topic)
	c := client(t, ca, true)

	s.Hold()
	const n = 5
	statuses := make(chan int, n)
	for range n {
		go func() {
			resp, err := send(context.Background(), c, s.URL, nil)
			if err != nil {
				t.Errorf("held push: %v", err)
				statuses <- 0
				return
			}
			statuses <- resp.StatusCode
		}()
	}
	// An abandoned held request is never answered.
	ctx, cancel := context.WithCancel(t.Context())
	abandoned := make(chan error, 1)
	go func() {
		_, err := send(ctx, c, s.URL, nil)
		abandoned <- err
	}()
	s.WaitRequests(t, n+1, 5*time.Second)
	if s.Answered() != 0 || len(statuses) != 0 {
		t.Fatalf("%d answered, %d statuses while held", s.Answered(), len(statuses))
	}
	cancel()
	if err := <-abandoned; !errors.Is(err, context.Canceled) {
		t.Errorf("abandoned push: %v, want context.Canceled", err)
	}
	s.WaitAbandoned(t, 1, 5*time.Second)
	s.Release()
	for range n {
		if st := <-statuses; st != 200 {
			t.Errorf("released push: %d", st)
		}
	}
	s.WaitAnswered(t, n, 5*time.Second)
	if resp, err := send(t.Context(), c, s.URL, nil); err != nil || resp.StatusCode != 200 {
		t.Errorf("after Release: %v %v", resp, err)
	}
	unanswered := 0
	for _, r := range s.Requests() {
		if !r.Answered {
			unanswered++
		}
	}
	if s.Answered() != n+1 || unanswered != 1 {
		t.Errorf("answered %d, unanswered %d; want %d and 1", s.Answered(), unanswered, n+1)
	}
}

func TestGoAwayMovesClientsToANewConnection(t *testing.T) {
	ca := testpki.NewCA(t)
	s := apnstest.Start(t, ca, topic)
	c := client(t, ca, true)

	if resp, err := send(t.Context(), c, s.URL, nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("first push: %v %v", resp, err)
	}
	// A request in flight during GOAWAY is still answered on its connection.
	s.Hold()
	inFlight := make(chan error, 1)
	go func() {
		resp, err := send(context.Background(), c, s.URL, nil)
		if err == nil && resp.StatusCode != 200 {
			err = errors.New(resp.Status)
		}
		inFlight <- err
	}()
	s.WaitRequests(t, 2, 5*time.Second)
	s.GoAway()
	s.Release()
	if err := <-inFlight; err != nil {
		t.Errorf("push in flight during GOAWAY: %v", err)
	}
	// The client has seen the GOAWAY once the old connection is closed.
	waitFor(t, "the old connection to close", func() bool { return s.OpenConnections() == 0 })
	if resp, err := send(t.Context(), c, s.URL, nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("push after GOAWAY: %v %v", resp, err)
	}
	reqs := s.Requests()
	if s.Connections() != 2 || reqs[0].Conn != 1 || reqs[1].Conn != 1 || reqs[2].Conn != 2 {
		t.Errorf("%d connections, requests on %d, %d, %d; want 2 and 1, 1, 2", s.Connections(), reqs[0].Conn, reqs[1].Conn, reqs[2].Conn)
	}
}

func TestCloseConnectionsStopAndRestart(t *testing.T) {
	ca := testpki.NewCA(t)
	s := apnstest.Start(t, ca, topic)
	c := client(t, ca, true)

	if resp, err := send(t.Context(), c, s.URL, nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("first push: %v %v", resp, err)
	}
	// Cut while a request is held: the client gets an error, no answer.
	s.Hold()
	cut := make(chan error, 1)
	go func() {
		_, err := send(context.Background(), c, s.URL, nil)
		cut <- err
	}()
	s.WaitRequests(t, 2, 5*time.Second)
	s.CloseConnections()
	if err := <-cut; err == nil {
		t.Error("push on a cut connection succeeded")
	}
	s.WaitAbandoned(t, 1, 5*time.Second)
	s.Release()
	if resp, err := send(t.Context(), c, s.URL, nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("push after the cut: %v %v", resp, err)
	}

	s.Stop()
	if _, err := send(t.Context(), client(t, ca, true), s.URL, nil); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("push to a stopped server: %v, want connection refused", err)
	}
	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	// A new client: c's connection died with Stop, and c may not have
	// noticed yet (a write on it fails with a broken pipe).
	if resp, err := send(t.Context(), client(t, ca, true), s.URL, nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("push after Restart: %v %v", resp, err)
	}
	if s.Answered() != 3 || s.Abandoned() != 1 || s.Count() != 4 {
		t.Errorf("answered %d, abandoned %d of %d; want 3 and 1 of 4", s.Answered(), s.Abandoned(), s.Count())
	}
}

func TestCountWithoutRecording(t *testing.T) {
	ca := testpki.NewCA(t)
	s := apnstest.Start(t, ca, topic)
	c := client(t, ca, true)
	s.SetRecord(false)
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			if resp, err := send(t.Context(), c, s.URL, nil); err != nil || resp.StatusCode != 200 {
				t.Errorf("push: %v %v", resp, err)
			}
		})
	}
	wg.Wait()
	if s.Count() != 20 || s.Answered() != 20 || len(s.Requests()) != 0 {
		t.Errorf("count %d, answered %d, recorded %d; want 20, 20, 0", s.Count(), s.Answered(), len(s.Requests()))
	}
}

func TestAuthorizationsAreDistinct(t *testing.T) {
	ca := testpki.NewCA(t)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s := apnstest.StartToken(t, ca, topic, &key.PublicKey, "KEY1", "TEAM1")
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}, Protocols: new(http.Protocols)}
	tr.Protocols.SetHTTP2(true)
	t.Cleanup(tr.CloseIdleConnections)
	c := &http.Client{Transport: tr}

	// ECDSA signatures are randomized: two tokens made in the same second
	// still differ.
	var bearers []string
	for range 2 {
		tok := &token.Token{AuthKey: key, KeyID: "KEY1", TeamID: "TEAM1"}
		if _, err := tok.Generate(); err != nil {
			t.Fatal(err)
		}
		bearers = append(bearers, "bearer "+tok.Bearer)
	}
	for _, b := range []string{bearers[0], bearers[0], bearers[1], bearers[0]} {
		if resp, err := send(t.Context(), c, s.URL, map[string]string{"authorization": b}); err != nil || resp.StatusCode != 200 {
			t.Fatalf("push: %v %v", resp, err)
		}
	}
	if got := s.Authorizations(); !slices.Equal(got, bearers) {
		t.Errorf("Authorizations() = %d values, want the 2 tokens in order", len(got))
	}
}

// waitFor polls cond until it holds, failing the test after 5s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	deadline := time.NewTimer(5 * time.Second)
	defer deadline.Stop()
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline.C:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}
