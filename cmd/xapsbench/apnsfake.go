package main

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// fakeAPNs stands in for Apple's push service: HTTP/2 over TLS on
// 127.0.0.1 with the bench's server certificate, demanding and verifying a
// client certificate issued by the bench's CA (the APNs certificate
// xapsproxy is configured with). It records when each request arrives and
// checks that it is the Mail push xapsproxy must send for one of the
// devices added (addDevice); every request is answered 200 with an
// apns-id, well formed or not, and the mismatches are counted as errors in
// the report.
type fakeAPNs struct {
	url    string
	srv    *http.Server
	served chan struct{} // closed when Serve has returned
	log    *tailBuffer   // the HTTP server's own log (TLS handshake errors and the like)

	mu       sync.Mutex
	devices  map[string]fakeDevice // by lower-case token
	pending  []pushArrival         // arrivals not yet taken by the phase
	requests int
	conns    int
	problems []string
	tlsState string        // TLS and HTTP version of the first request
	wake     chan struct{} // 1-buffered: an arrival was recorded
}

// fakeDevice is what pushes to one device token must carry.
type fakeDevice struct {
	accountID string
	mailboxes map[string]string // MD5 hex -> name, of the mailboxes it registered
}

// pushArrival is one request to the fake APNs.
type pushArrival struct {
	at        time.Time // when its headers had arrived (the handler started)
	ok        bool      // well formed
	token     string    // lower case, from the path
	mailboxes []string  // named by m, when well formed
}

// startFakeAPNs listens on a free loopback port. Close stops it.
func startFakeAPNs(p *pki) (*fakeAPNs, error) {
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
	f := &fakeAPNs{url: "https://" + l.Addr().String(), devices: make(map[string]fakeDevice),
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

// addDevice makes pushes to token well formed when they carry accountID and
// name some of mailboxes (as the device registered them), and only those.
func (f *fakeAPNs) addDevice(token, accountID string, mailboxes ...string) {
	d := fakeDevice{accountID: accountID, mailboxes: make(map[string]string, len(mailboxes))}
	for _, mb := range mailboxes {
		d.mailboxes[mailboxHash(mb)] = mb
	}
	f.mu.Lock()
	f.devices[strings.ToLower(token)] = d
	f.mu.Unlock()
}

// pushMailboxHash is the MD5 hex of "INBOX", which the push phase's
// device registers alone.
const pushMailboxHash = "7e33429f656f1e6e9d79b29c3f82c57e"

// mailboxHash is what a push's m says for a mailbox: the MD5 hex of its
// name as the device registered it.
func mailboxHash(name string) string {
	sum := md5.Sum([]byte(name))
	return hex.EncodeToString(sum[:])
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
	token := strings.ToLower(strings.TrimPrefix(r.URL.Path, "/3/device/"))
	f.mu.Lock()
	dev, known := f.devices[token]
	f.mu.Unlock()
	mailboxes, problems := checkPush(r, body, dev, known)
	bad = append(bad, problems...)

	f.mu.Lock()
	f.requests++
	for _, b := range bad {
		f.problems = append(f.problems, fmt.Sprintf("request %d: %s", f.requests, b))
	}
	if f.tlsState == "" && r.TLS != nil {
		f.tlsState = fmt.Sprintf("%s, %s", tls.VersionName(r.TLS.Version), r.Proto)
	}
	f.pending = append(f.pending, pushArrival{at: at, ok: len(bad) == 0, token: token, mailboxes: mailboxes})
	f.mu.Unlock()
	select {
	case f.wake <- struct{}{}:
	default:
	}
	w.Header().Set("apns-id", newAPNsID())
	w.WriteHeader(http.StatusOK)
}

// checkPush lists how r differs from a Mail push for dev (known: a device
// added): POST /3/device/<token> over HTTP/2, apns-topic the certificate's
// topic, apns-push-type background, body exactly
// {"aps":{"account-id":"<id>","m":[<hashes>]}}, from a client certificate
// whose subject UID is the topic. It returns the mailboxes m names.
func checkPush(r *http.Request, body []byte, dev fakeDevice, known bool) ([]string, []string) {
	var bad []string
	if r.Method != http.MethodPost {
		bad = append(bad, fmt.Sprintf("method %s, want POST", r.Method))
	}
	if r.ProtoMajor != 2 {
		bad = append(bad, fmt.Sprintf("protocol %s, want HTTP/2.0", r.Proto))
	}
	if !known || !strings.HasPrefix(r.URL.Path, "/3/device/") {
		bad = append(bad, fmt.Sprintf("path %q, want /3/device/<a registered device's token>", r.URL.Path))
	}
	if got := r.Header.Get("apns-topic"); got != apnsTopic {
		bad = append(bad, fmt.Sprintf("apns-topic %q, want %q", got, apnsTopic))
	}
	if got := r.Header.Get("apns-push-type"); got != "background" {
		bad = append(bad, fmt.Sprintf("apns-push-type %q, want background", got))
	}
	mailboxes, err := checkPayload(body, dev)
	if known && err != nil {
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
	return mailboxes, bad
}

// checkPayload accepts exactly
// {"aps":{"account-id":"<dev's account>","m":[<hashes>]}}: no other keys
// (compared exactly), nothing after the object, m not empty and naming
// only mailboxes dev registered. It returns their names, in m's order.
func checkPayload(body []byte, dev fakeDevice) ([]string, error) {
	var top map[string]map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&top); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("data after the JSON object")
	}
	aps, ok := top["aps"]
	if len(top) != 1 || !ok {
		return nil, errors.New(`want exactly one key "aps"`)
	}
	var id string
	var m []string
	if len(aps) != 2 || json.Unmarshal(aps["account-id"], &id) != nil || id != dev.accountID ||
		json.Unmarshal(aps["m"], &m) != nil || len(m) == 0 {
		return nil, fmt.Errorf(`want exactly {"account-id":%q,"m":[...]} in aps, m not empty`, dev.accountID)
	}
	names := make([]string, len(m))
	for i, h := range m {
		if names[i], ok = dev.mailboxes[h]; !ok {
			return nil, fmt.Errorf("m names %s, not a mailbox the device registered", h)
		}
	}
	return names, nil
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
