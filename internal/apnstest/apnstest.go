// Package apnstest is a fake Apple Push Notification service for tests: a
// real HTTP/2 TLS server that demands a client certificate from a testpki CA
// (or, with StartToken, a signed provider token), checks every request
// against what xapsproxy must send for a Mail push, records it, and answers
// as APNs would (200, or an error status with a JSON reason).
//
// Protocol violations do not stop the server: each one is recorded, exposed
// by Errors, and reported with t.Errorf when the test ends.
package apnstest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xapsproxy/xapsproxy/internal/testpki"
)

// Request is one push the fake received.
type Request struct {
	Token         string    // device token from the path, as sent
	Topic         string    // apns-topic
	PushType      string    // apns-push-type
	Expiration    time.Time // apns-expiration
	AccountID     string    // aps.account-id from the body
	Mailboxes     []string  // aps.m from the body: MD5 hex of each mailbox name; nil if absent
	Body          []byte    // the raw body
	Header        http.Header
	ClientSubject string // subject of the client certificate; "" with token auth
	ClientUID     string // UID attribute of that subject
	Authorization string // the authorization header (token auth only)
	Received      time.Time
}

// Server is a running fake APNs. Its methods are safe for concurrent use.
type Server struct {
	// URL is the base URL (https://127.0.0.1:port) to use as the endpoint.
	URL string

	srv       *httptest.Server
	wantTopic string
	token     *tokenCheck // nil: certificate authentication

	mu        sync.Mutex
	requests  []Request
	errs      []string
	tlsErrs   []string
	conns     int // connections accepted
	def       reply
	responses map[string]reply   // by lower-case token
	queued    map[string][]reply // one-shot replies, used before responses
	changed   chan struct{}      // closed and replaced when a request is recorded
}

type reply struct {
	status int
	reason string
}

type tokenCheck struct {
	key    *ecdsa.PublicKey
	keyID  string
	teamID string
}

// Start runs a fake APNs on 127.0.0.1 with a server certificate from ca that
// requires a client certificate issued by ca, and expects every push to
// carry apns-topic wantTopic. It is closed when the test ends.
func Start(t testing.TB, ca *testpki.CA, wantTopic string) *Server {
	t.Helper()
	return start(t, ca, wantTopic, nil)
}

// StartToken is like Start but expects token authentication: no client
// certificate, and an "authorization: bearer <JWT>" header signed (ES256) by
// the key with the given key id and team id.
func StartToken(t testing.TB, ca *testpki.CA, wantTopic string, key *ecdsa.PublicKey, keyID, teamID string) *Server {
	t.Helper()
	return start(t, ca, wantTopic, &tokenCheck{key: key, keyID: keyID, teamID: teamID})
}

func start(t testing.TB, ca *testpki.CA, wantTopic string, tc *tokenCheck) *Server {
	t.Helper()
	s := &Server{
		wantTopic: wantTopic,
		token:     tc,
		def:       reply{status: http.StatusOK},
		responses: map[string]reply{},
		queued:    map[string][]reply{},
		changed:   make(chan struct{}),
	}
	s.srv = httptest.NewUnstartedServer(http.HandlerFunc(s.handle))
	s.srv.EnableHTTP2 = true
	s.srv.Config.ErrorLog = log.New(logWriter{s}, "", 0)
	s.srv.Config.ConnState = func(_ net.Conn, state http.ConnState) {
		if state == http.StateNew {
			s.mu.Lock()
			s.conns++
			s.mu.Unlock()
		}
	}
	s.srv.TLS = &tls.Config{
		Certificates: []tls.Certificate{ca.ServerCert(t, "127.0.0.1")},
		MinVersion:   tls.VersionTLS12,
	}
	if tc == nil {
		s.srv.TLS.ClientAuth = tls.RequireAndVerifyClientCert
		s.srv.TLS.ClientCAs = ca.Pool()
	}
	s.srv.StartTLS()
	s.URL = s.srv.URL
	t.Cleanup(func() {
		s.srv.CloseClientConnections()
		s.srv.Close()
		for _, e := range s.Errors() {
			t.Errorf("apnstest: %s", e)
		}
	})
	return s
}

// SetDefault sets the answer for tokens without their own (initially 200).
func (s *Server) SetDefault(status int, reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.def = reply{status, reason}
}

// SetResponse sets the answer to every push to token (any case).
func (s *Server) SetResponse(token string, status int, reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.responses[strings.ToLower(token)] = reply{status, reason}
}

// QueueResponse adds a one-shot answer for the next push to token; queued
// answers are used in order before the SetResponse or default one.
func (s *Server) QueueResponse(token string, status int, reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	tok := strings.ToLower(token)
	s.queued[tok] = append(s.queued[tok], reply{status, reason})
}

// Requests returns the requests received so far, oldest first.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// WaitRequests waits until at least n requests have arrived and returns all
// of them. It fails the test if that takes longer than timeout.
func (s *Server) WaitRequests(t testing.TB, n int, timeout time.Duration) []Request {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		if len(s.requests) >= n {
			reqs := append([]Request(nil), s.requests...)
			s.mu.Unlock()
			return reqs
		}
		got, changed := len(s.requests), s.changed
		s.mu.Unlock()
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("apnstest: got %d requests after %v, want %d", got, timeout, n)
			return nil
		}
	}
}

// Connections returns how many TCP connections the server has accepted, so
// that tests can check that a client keeps its connection open.
func (s *Server) Connections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns
}

// Errors returns every protocol violation seen so far.
func (s *Server) Errors() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.errs...)
}

// HandshakeErrors returns the server's TLS handshake failures (for example a
// client without an acceptable certificate). They are not protocol errors.
func (s *Server) HandshakeErrors() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.tlsErrs...)
}

var pathRE = regexp.MustCompile(`^/3/device/([0-9a-fA-F]{64})$`)

func (s *Server) handle(w http.ResponseWriter, r *http.Request) {
	now := time.Now()
	req := Request{Header: r.Header.Clone(), Received: now}
	var errs []string
	bad := func(reason, format string, args ...any) string {
		errs = append(errs, fmt.Sprintf(format, args...))
		return reason
	}
	var reason string // APNs reason for the first violation

	body, err := io.ReadAll(r.Body)
	if err != nil {
		reason = bad("BadMessage", "read body: %v", err)
	}
	req.Body = body
	if r.Method != http.MethodPost {
		reason = first(reason, bad("MethodNotAllowed", "method %s, want POST", r.Method))
	}
	if r.Proto != "HTTP/2.0" {
		reason = first(reason, bad("BadMessage", "protocol %s, want HTTP/2.0", r.Proto))
	}
	if m := pathRE.FindStringSubmatch(r.URL.Path); m != nil {
		req.Token = m[1]
	} else {
		reason = first(reason, bad("BadPath", "path %q, want /3/device/<64 hex digits>", r.URL.Path))
	}
	req.Topic = r.Header.Get("apns-topic")
	if req.Topic != s.wantTopic {
		reason = first(reason, bad("BadTopic", "apns-topic %q, want %q", req.Topic, s.wantTopic))
	}
	req.PushType = r.Header.Get("apns-push-type")
	if req.PushType != "background" {
		reason = first(reason, bad("InvalidPushType", "apns-push-type %q, want background", req.PushType))
	}
	if exp, err := strconv.ParseInt(r.Header.Get("apns-expiration"), 10, 64); err != nil {
		reason = first(reason, bad("BadExpirationDate", "apns-expiration %q is not unix seconds", r.Header.Get("apns-expiration")))
	} else {
		req.Expiration = time.Unix(exp, 0)
		if d := req.Expiration.Sub(now.Add(24 * time.Hour)); d < -time.Minute || d > time.Minute {
			reason = first(reason, bad("BadExpirationDate", "apns-expiration %v is %v away from now+24h", req.Expiration, d))
		}
	}
	// No header (what the reference daemon sends; APNs assumes 10), or one
	// of the priorities the product may be configured to send.
	if v, ok := r.Header["Apns-Priority"]; ok && (len(v) != 1 || v[0] != "5" && v[0] != "10") {
		reason = first(reason, bad("BadPriority", "apns-priority %q, want none, 5 or 10", v))
	}
	if id, m, err := decodeBody(body); err != nil {
		reason = first(reason, bad("BadMessage", "body %q: %v", body, err))
	} else {
		req.AccountID, req.Mailboxes = id, m
	}
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		leaf := r.TLS.PeerCertificates[0]
		req.ClientSubject = leaf.Subject.String()
		for _, n := range leaf.Subject.Names {
			if n.Type.Equal(testpki.OIDUserID()) {
				req.ClientUID = fmt.Sprint(n.Value)
			}
		}
	}
	req.Authorization = r.Header.Get("Authorization")
	if s.token == nil {
		if req.ClientSubject == "" {
			reason = first(reason, bad("MissingProviderToken", "no client certificate presented"))
		}
	} else if err := s.token.verify(req.Authorization, now); err != nil {
		reason = first(reason, bad("InvalidProviderToken", "authorization: %v", err))
	}

	s.mu.Lock()
	rep := s.def
	if len(errs) > 0 {
		rep = reply{http.StatusBadRequest, reason}
	} else if q := s.queued[strings.ToLower(req.Token)]; len(q) > 0 {
		rep = q[0]
		s.queued[strings.ToLower(req.Token)] = q[1:]
	} else if tr, ok := s.responses[strings.ToLower(req.Token)]; ok {
		rep = tr
	}
	s.errs = append(s.errs, errs...)
	s.requests = append(s.requests, req)
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()

	w.Header().Set("apns-id", newUUID())
	if rep.status == http.StatusOK {
		w.WriteHeader(http.StatusOK)
		return
	}
	answer := map[string]any{"reason": rep.reason}
	if rep.status == http.StatusGone {
		answer["timestamp"] = now.UnixMilli()
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(rep.status)
	_ = json.NewEncoder(w).Encode(answer)
}

func first(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// MailboxHash is how a Mail push names a mailbox in aps.m: the MD5 of the
// name as the device registered it, in lower-case hex.
func MailboxHash(name string) string {
	sum := md5.Sum([]byte(name))
	return hex.EncodeToString(sum[:])
}

// maxMailboxes is the most entries aps.m may have (push.MaxPushMailboxes).
const maxMailboxes = 20

var md5HexRE = regexp.MustCompile(`^[0-9a-f]{32}$`)

// decodeBody decodes a body that must be exactly
// {"aps":{"account-id":"...","m":["<md5 hex>",...]}}, with "m" optional: no
// other keys at either level (keys compared exactly, not case-folded), a
// non-empty string id, m (if present) 1 to 20 distinct lower-case MD5 hex
// strings, and nothing after the object.
func decodeBody(body []byte) (id string, mailboxes []string, err error) {
	var top map[string]json.RawMessage
	if err := decodeOnly(body, &top); err != nil {
		return "", nil, err
	}
	if len(top) != 1 || top["aps"] == nil {
		return "", nil, fmt.Errorf("want exactly one key \"aps\", got %d keys", len(top))
	}
	var aps map[string]json.RawMessage
	if err := decodeOnly(top["aps"], &aps); err != nil {
		return "", nil, fmt.Errorf("aps: %w", err)
	}
	want := 1
	if aps["m"] != nil {
		want = 2
	}
	if len(aps) != want || aps["account-id"] == nil {
		return "", nil, fmt.Errorf("aps: want exactly the keys \"account-id\" and optionally \"m\", got %d keys", len(aps))
	}
	if err := decodeOnly(aps["account-id"], &id); err != nil {
		return "", nil, fmt.Errorf("account-id: %w", err)
	}
	if id == "" {
		return "", nil, fmt.Errorf("account-id is empty")
	}
	if aps["m"] == nil {
		return id, nil, nil
	}
	if err := decodeOnly(aps["m"], &mailboxes); err != nil {
		return "", nil, fmt.Errorf("m: %w", err)
	}
	if len(mailboxes) == 0 || len(mailboxes) > maxMailboxes {
		return "", nil, fmt.Errorf("m has %d entries, want 1 to %d", len(mailboxes), maxMailboxes)
	}
	seen := map[string]bool{}
	for _, h := range mailboxes {
		if !md5HexRE.MatchString(h) {
			return "", nil, fmt.Errorf("m entry %q is not an MD5 in lower-case hex", h)
		}
		if seen[h] {
			return "", nil, fmt.Errorf("m names %s twice", h)
		}
		seen[h] = true
	}
	return id, mailboxes, nil
}

func decodeOnly(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("data after the JSON value")
	}
	return nil
}

// verify checks an ES256 provider token as APNs does.
func (tc *tokenCheck) verify(auth string, now time.Time) error {
	jwt, ok := strings.CutPrefix(auth, "bearer ")
	if !ok {
		return fmt.Errorf("%q is not \"bearer <token>\"", auth)
	}
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		return fmt.Errorf("token has %d parts, want 3", len(parts))
	}
	var header struct{ Alg, Kid string }
	var claims struct {
		Iss string
		Iat int64
	}
	for i, v := range []any{&header, &claims} {
		raw, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err != nil {
			return fmt.Errorf("token part %d: %w", i, err)
		}
		if err := json.Unmarshal(raw, v); err != nil {
			return fmt.Errorf("token part %d: %w", i, err)
		}
	}
	if header.Alg != "ES256" || header.Kid != tc.keyID {
		return fmt.Errorf("header alg %q kid %q, want ES256 and %q", header.Alg, header.Kid, tc.keyID)
	}
	if claims.Iss != tc.teamID {
		return fmt.Errorf("iss %q, want %q", claims.Iss, tc.teamID)
	}
	if iat := time.Unix(claims.Iat, 0); iat.After(now.Add(time.Minute)) || iat.Before(now.Add(-time.Hour)) {
		return fmt.Errorf("iat %v is not within the last hour", iat)
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil || len(sig) != 64 {
		return fmt.Errorf("signature is not 64 bytes of base64url")
	}
	digest := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	r, s := new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])
	if !ecdsa.Verify(tc.key, digest[:], r, s) {
		return fmt.Errorf("signature does not verify")
	}
	return nil
}

// logWriter collects the http.Server's error log (TLS handshake failures).
type logWriter struct{ s *Server }

func (w logWriter) Write(p []byte) (int, error) {
	w.s.mu.Lock()
	defer w.s.mu.Unlock()
	w.s.tlsErrs = append(w.s.tlsErrs, strings.TrimSpace(string(p)))
	return len(p), nil
}

func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return strings.ToUpper(h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:])
}
