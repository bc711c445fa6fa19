package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
)

// fakeAPNs stands in for Apple's push service: HTTP/2 over TLS on
// 127.0.0.1 with the bench's server certificate, demanding and verifying a
// client certificate issued by the bench's CA (the APNs certificate
// xapsproxy is configured with). It records when each request arrives and
// checks that it is the Mail push xapsproxy must send for the registered
// device; every request is answered 200 with an apns-id, well formed or
// not, and the mismatches are counted as errors in the report.
type fakeAPNs struct {
	url       string
	token     string // the device token pushes must be for
	accountID string // the aps-account-id it registered with
	srv       *http.Server
	served    chan struct{} // closed when Serve has returned
	log       *tailBuffer   // the HTTP server's own log (TLS handshake errors and the like)

	mu       sync.Mutex
	pending  []pushArrival // arrivals not yet taken by the phase
	requests int
	conns    int
	problems []string
	tlsState string        // TLS and HTTP version of the first request
	wake     chan struct{} // 1-buffered: an arrival was recorded
}

// pushArrival is one request to the fake APNs.
type pushArrival struct {
	at time.Time // when its headers had arrived (the handler started)
	ok bool      // well formed
}

// startFakeAPNs listens on a free loopback port. Close stops it.
func startFakeAPNs(p *pki, token, accountID string) (*fakeAPNs, error) {
	cert, err := tls.LoadX509KeyPair(p.serverCert, p.serverKey)
	if err != nil {
		return nil, fmt.Errorf("fake APNs certificate: %w", err)
	}
	pool, err := p.pool()
	if err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("fake APNs: %w", err)
	}
	f := &fakeAPNs{url: "https://" + l.Addr().String(), token: token, accountID: accountID,
		served: make(chan struct{}), log: &tailBuffer{max: 16 << 10}, wake: make(chan struct{}, 1)}
	f.srv = &http.Server{
		Handler: http.HandlerFunc(f.handle),
		TLSConfig: &tls.Config{
			MinVersion:   tls.VersionTLS12,
			Certificates: []tls.Certificate{cert},
			ClientAuth:   tls.RequireAndVerifyClientCert,
			ClientCAs:    pool,
			NextProtos:   []string{"h2"},
		},
		ErrorLog:          log.New(f.log, "", 0),
		ReadHeaderTimeout: 10 * time.Second,
		ConnState: func(_ net.Conn, st http.ConnState) {
			if st == http.StateNew {
				f.mu.Lock()
				f.conns++
				f.mu.Unlock()
			}
		},
	}
	go func() {
		defer close(f.served)
		f.srv.ServeTLS(l, "", "") // ErrServerClosed after Close
	}()
	return f, nil
}

// endpoint is how xapsproxy is told to push here.
func (f *fakeAPNs) endpoint(p *pki) apnsEndpoint { return apnsEndpoint{url: f.url, caFile: p.caFile} }

// Close stops the server, closing xapsproxy's connection, and waits for it.
func (f *fakeAPNs) Close() {
	f.srv.Close()
	<-f.served
}

func (f *fakeAPNs) handle(w http.ResponseWriter, r *http.Request) {
	at := time.Now()
	body, err := io.ReadAll(io.LimitReader(r.Body, 4097))
	var bad []string
	if err != nil {
		bad = append(bad, fmt.Sprintf("reading the body: %v", err))
	}
	bad = append(bad, checkPush(r, body, f.token, f.accountID)...)

	f.mu.Lock()
	f.requests++
	for _, b := range bad {
		f.problems = append(f.problems, fmt.Sprintf("request %d: %s", f.requests, b))
	}
	if f.tlsState == "" && r.TLS != nil {
		f.tlsState = fmt.Sprintf("%s, %s", tls.VersionName(r.TLS.Version), r.Proto)
	}
	f.pending = append(f.pending, pushArrival{at: at, ok: len(bad) == 0})
	f.mu.Unlock()
	select {
	case f.wake <- struct{}{}:
	default:
	}
	w.Header().Set("apns-id", newAPNsID())
	w.WriteHeader(http.StatusOK)
}

// checkPush lists how r differs from a Mail push for token: POST
// /3/device/<token> over HTTP/2, apns-topic the certificate's topic,
// apns-push-type background, body exactly {"aps":{"account-id":"<id>","m":[<INBOX>]}}, from
// a client certificate whose subject UID is the topic.
func checkPush(r *http.Request, body []byte, token, accountID string) []string {
	var bad []string
	if r.Method != http.MethodPost {
		bad = append(bad, fmt.Sprintf("method %s, want POST", r.Method))
	}
	if r.ProtoMajor != 2 {
		bad = append(bad, fmt.Sprintf("protocol %s, want HTTP/2.0", r.Proto))
	}
	if got, ok := strings.CutPrefix(r.URL.Path, "/3/device/"); !ok || !strings.EqualFold(got, token) {
		bad = append(bad, fmt.Sprintf("path %q, want /3/device/%s", r.URL.Path, token))
	}
	if got := r.Header.Get("apns-topic"); got != apnsTopic {
		bad = append(bad, fmt.Sprintf("apns-topic %q, want %q", got, apnsTopic))
	}
	if got := r.Header.Get("apns-push-type"); got != "background" {
		bad = append(bad, fmt.Sprintf("apns-push-type %q, want background", got))
	}
	if err := checkPayload(body, accountID); err != nil {
		bad = append(bad, fmt.Sprintf("body %q: %v", body, err))
	}
	uid := ""
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		for _, n := range r.TLS.PeerCertificates[0].Subject.Names {
			if n.Type.Equal(oidUserID()) {
				uid = fmt.Sprint(n.Value)
			}
		}
	}
	if uid != apnsTopic {
		bad = append(bad, fmt.Sprintf("client certificate UID %q, want %q", uid, apnsTopic))
	}
	return bad
}

// pushMailboxHash is the "m" of every push the bench expects: the MD5 hex
// of "INBOX", the one mailbox its device registers.
const pushMailboxHash = "7e33429f656f1e6e9d79b29c3f82c57e"

// checkPayload accepts exactly
// {"aps":{"account-id":"<accountID>","m":["<md5 of INBOX>"]}}: no other
// keys (compared exactly), nothing after the object.
func checkPayload(body []byte, accountID string) error {
	var top map[string]map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&top); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("data after the JSON object")
	}
	aps, ok := top["aps"]
	if len(top) != 1 || !ok {
		return errors.New(`want exactly one key "aps"`)
	}
	var id string
	var m []string
	if len(aps) != 2 || json.Unmarshal(aps["account-id"], &id) != nil || id != accountID ||
		json.Unmarshal(aps["m"], &m) != nil || !slices.Equal(m, []string{pushMailboxHash}) {
		return fmt.Errorf(`want exactly {"account-id":%q,"m":[%q]} in aps`, accountID, pushMailboxHash)
	}
	return nil
}

// next waits up to timeout for the next arrival not yet taken.
func (f *fakeAPNs) next(ctx context.Context, timeout time.Duration) (pushArrival, bool, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		f.mu.Lock()
		if len(f.pending) > 0 {
			a := f.pending[0]
			f.pending = f.pending[1:]
			f.mu.Unlock()
			return a, true, nil
		}
		f.mu.Unlock()
		select {
		case <-f.wake:
		case <-t.C:
			return pushArrival{}, false, nil
		case <-ctx.Done():
			return pushArrival{}, false, ctx.Err()
		}
	}
}

// take returns and forgets the arrivals not yet taken.
func (f *fakeAPNs) take() []pushArrival {
	f.mu.Lock()
	defer f.mu.Unlock()
	a := f.pending
	f.pending = nil
	return a
}

// stats returns the totals so far.
func (f *fakeAPNs) stats() (requests, conns int, problems []string, tlsState string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.requests, f.conns, append([]string(nil), f.problems...), f.tlsState
}

// newAPNsID is a random UUID, as APNs puts in apns-id.
func newAPNsID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%X-%X-%X-%X-%X", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}
