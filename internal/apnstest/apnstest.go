// Package apnstest is a fake Apple Push Notification service for tests: a
// real HTTP/2 TLS server that demands a client certificate from a testpki CA
// (or, with StartToken, a signed provider token), checks every request
// against what xapsproxy must send for a Mail push, records it, and answers
// as APNs would (200, or an error status with a JSON reason).
//
// It can give every answer Apple gives, and misbehave as Apple's servers
// and the network between do: any status and reason, with or without
// Retry-After (SetReply, QueueReply), late answers (SetDelay), no answer
// until released or the client gives up (Hold), GOAWAY on the open
// connections (GoAway), connections cut without a word (CloseConnections),
// and no one listening (Stop, then Restart on the same port).
//
// Protocol violations do not stop the server: each one is recorded, exposed
// by Errors, and reported with t.Errorf when the test ends.
package apnstest

import (
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/xapsproxy/xapsproxy/internal/testpki"
)

// maxStreams is the SETTINGS_MAX_CONCURRENT_STREAMS the fake announces:
// what Apple's servers have been seen to allow per connection (Go's own
// default of 250 would make a client open connections Apple would not
// make it open).
const maxStreams = 1000

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
	ClientSerial  string // serial number of that certificate, in hex
	Authorization string // the authorization header (token auth only)
	Received      time.Time
	APNsID        string // the apns-id the fake answers with
	// Conn is the connection that carried the request: 1 for the first the
	// server accepted, 2 for the second, and so on.
	Conn int
	// Answered is whether the fake wrote its answer while the client was
	// still waiting for it. A request held (Hold) or delayed until the
	// client gave up, or cut off by CloseConnections or Stop, is not
	// answered: the client never saw a status for it.
	Answered bool
}

// Server is a running fake APNs. Its methods are safe for concurrent use.
type Server struct {
	// URL is the base URL (https://127.0.0.1:port) to use as the endpoint.
	// It stays the same across Stop and Restart.
	URL string

	addr      string // host:port of URL
	tls       *tls.Config
	wantTopic string
	token     *tokenCheck // nil: certificate authentication
	ctx       context.Context
	cancel    context.CancelFunc // ends held and delayed answers when the test ends
	wg        sync.WaitGroup     // accept loops and HTTP servers
	peers     sync.Map           // *x509.Certificate of a client -> [subject, UID, serial]

	mu sync.Mutex
	// ln is the TCP listener; nil after Stop. Connections it accepts go to
	// gen, the HTTP server of the current generation; GoAway starts a new
	// generation and shuts the old one down gracefully, which is how
	// net/http sends GOAWAY to every open connection.
	ln        net.Listener
	gen       *generation
	gens      []*generation // every generation not yet closed, gen last
	open      map[*trackedConn]struct{}
	conns     int // connections accepted
	record    bool
	requests  []Request // recorded requests; index = request number - 1 while recording
	count     int       // requests received
	answered  int
	abandoned int
	auths     []string // distinct authorization headers, first seen first
	authSeen  map[string]bool
	errs      []string
	tlsErrs   []string
	def       Reply
	responses map[string]Reply   // by lower-case token
	queued    map[string][]Reply // one-shot replies, used before responses
	delay     time.Duration
	hold      chan struct{} // non-nil while Hold is on; closed by Release
	changed   chan struct{} // closed and replaced when a request arrives or is answered
	watched   bool          // someone waits on changed
}

// generation is one http.Server serving the connections handed to it.
type generation struct {
	srv *http.Server
	ln  *connQueue
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
	return start(t, ca, wantTopic, newTokenCheck(key, keyID, teamID))
}

func start(t testing.TB, ca *testpki.CA, wantTopic string, tc *tokenCheck) *Server {
	t.Helper()
	s := &Server{
		wantTopic: wantTopic,
		token:     tc,
		record:    true,
		open:      map[*trackedConn]struct{}{},
		authSeen:  map[string]bool{},
		def:       Reply{Status: http.StatusOK},
		responses: map[string]Reply{},
		queued:    map[string][]Reply{},
		changed:   make(chan struct{}),
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.tls = &tls.Config{
		Certificates: []tls.Certificate{ca.ServerCert(t, "127.0.0.1")},
		MinVersion:   tls.VersionTLS12,
		NextProtos:   []string{"h2", "http/1.1"},
	}
	if tc == nil {
		s.tls.ClientAuth = tls.RequireAndVerifyClientCert
		s.tls.ClientCAs = ca.Pool()
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("apnstest: listen: %v", err)
	}
	s.addr = ln.Addr().String()
	s.URL = "https://" + s.addr
	s.mu.Lock()
	s.serveLocked(ln)
	s.mu.Unlock()
	t.Cleanup(func() {
		s.cancel()
		s.Stop()
		s.wg.Wait()
		for _, e := range s.Errors() {
			t.Errorf("apnstest: %s", e)
		}
	})
	return s
}

// serveLocked starts accepting on ln with a new generation.
func (s *Server) serveLocked(ln net.Listener) {
	s.ln = ln
	s.newGenerationLocked()
	s.wg.Add(1)
	go s.accept(ln)
}

// newGenerationLocked starts an HTTP server for the connections accepted
// from now on.
func (s *Server) newGenerationLocked() {
	g := &generation{ln: &connQueue{addr: s.ln.Addr(), conns: make(chan net.Conn), done: make(chan struct{})}}
	g.srv = &http.Server{
		Handler:   http.HandlerFunc(s.handle),
		TLSConfig: s.tls.Clone(), // each server adds its ALPN protocols to its own
		ErrorLog:  log.New(logWriter{s}, "", 0),
		HTTP2:     &http.HTTP2Config{MaxConcurrentStreams: maxStreams},
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if tc, ok := c.(*tls.Conn); ok {
				if c, ok := tc.NetConn().(*trackedConn); ok {
					return context.WithValue(ctx, connKey{}, c.id)
				}
			}
			return ctx
		},
	}
	s.gen = g
	s.gens = append(s.gens, g)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		_ = g.srv.ServeTLS(g.ln, "", "") // returns when the generation is closed
	}()
}

// connKey is the context key of the connection number in a request.
type connKey struct{}

// accept hands the connections ln accepts to the current generation.
func (s *Server) accept(ln net.Listener) {
	defer s.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			return // closed by Stop
		}
		s.mu.Lock()
		s.conns++
		tc := &trackedConn{Conn: c, s: s, id: s.conns}
		s.open[tc] = struct{}{}
		s.mu.Unlock()
		s.handOver(tc)
	}
}

// handOver gives c to the current generation, or to the one after it if
// GoAway replaced it meanwhile.
func (s *Server) handOver(c net.Conn) {
	for {
		s.mu.Lock()
		g := s.gen
		s.mu.Unlock()
		if g == nil {
			_ = c.Close() // stopped
			return
		}
		select {
		case g.ln.conns <- c:
			return
		case <-g.ln.done:
		}
	}
}

// GoAway sends GOAWAY (NO_ERROR) on every open connection, as Apple does
// before maintenance: requests already on a connection are still answered,
// and then it is closed; the client must open a new one for further
// pushes. The server keeps listening.
func (s *Server) GoAway() {
	s.mu.Lock()
	old := s.gen
	if old == nil {
		s.mu.Unlock()
		return
	}
	s.newGenerationLocked()
	s.mu.Unlock()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		// Shutdown sends the GOAWAY frames, then waits for the streams;
		// the test's end cuts the wait short.
		_ = old.srv.Shutdown(s.ctx)
		_ = old.srv.Close()
		s.mu.Lock()
		defer s.mu.Unlock()
		for i, g := range s.gens {
			if g == old {
				s.gens = append(s.gens[:i], s.gens[i+1:]...)
				break
			}
		}
	}()
}

// CloseConnections cuts every open connection at the TCP level, without
// GOAWAY or an answer to requests on it, as a network failure would. The
// server keeps listening.
func (s *Server) CloseConnections() {
	s.mu.Lock()
	conns := make([]*trackedConn, 0, len(s.open))
	for c := range s.open {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
}

// Stop closes the listener and every connection: new connections are
// refused until Restart, and requests in flight get no answer. The URL stays
// valid for Restart.
func (s *Server) Stop() {
	s.mu.Lock()
	ln, gens := s.ln, s.gens
	s.ln, s.gen, s.gens = nil, nil, nil
	s.mu.Unlock()
	if ln != nil {
		_ = ln.Close()
	}
	for _, g := range gens {
		_ = g.srv.Close()
	}
	s.CloseConnections()
}

// Restart listens again on the same address after Stop. It fails if the
// port was taken by someone else meanwhile, or the test has ended.
func (s *Server) Restart() error {
	if s.ctx.Err() != nil {
		return errors.New("apnstest: restart after the test ended")
	}
	s.mu.Lock()
	running := s.ln != nil
	s.mu.Unlock()
	if running {
		return errors.New("apnstest: restart while running; Stop first")
	}
	ln, err := net.Listen("tcp", s.addr)
	if err != nil {
		return fmt.Errorf("apnstest: listen again on %s: %w", s.addr, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln != nil || s.ctx.Err() != nil {
		_ = ln.Close()
		return errors.New("apnstest: restarted concurrently or after the test ended")
	}
	s.serveLocked(ln)
	return nil
}

// Requests returns the requests received so far, oldest first (none while
// SetRecord(false) is in effect).
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// WaitRequests waits until at least n requests have arrived (answered or
// not) and returns the recorded ones. It fails the test if that takes
// longer than timeout.
func (s *Server) WaitRequests(t testing.TB, n int, timeout time.Duration) []Request {
	t.Helper()
	if got, ok := s.waitCount(func() int { return s.count }, n, timeout); !ok {
		t.Fatalf("apnstest: got %d requests after %v, want %d", got, timeout, n)
	}
	return s.Requests()
}

// WaitAnswered waits until at least n requests have been answered. It
// fails the test if that takes longer than timeout.
func (s *Server) WaitAnswered(t testing.TB, n int, timeout time.Duration) {
	t.Helper()
	if got, ok := s.waitCount(func() int { return s.answered }, n, timeout); !ok {
		t.Fatalf("apnstest: %d requests answered after %v, want %d", got, timeout, n)
	}
}

// waitCount waits until counter (read under s.mu) reaches n.
func (s *Server) waitCount(counter func() int, n int, timeout time.Duration) (int, bool) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		got := counter()
		if got >= n {
			s.mu.Unlock()
			return got, true
		}
		s.watched = true
		changed := s.changed
		s.mu.Unlock()
		select {
		case <-changed:
		case <-deadline.C:
			return got, false
		}
	}
}

// notifyLocked wakes the waiters of WaitRequests and WaitAnswered.
func (s *Server) notifyLocked() {
	if s.watched {
		close(s.changed)
		s.changed = make(chan struct{})
		s.watched = false
	}
}

// Count returns how many requests have arrived, answered or not, recorded
// or not.
func (s *Server) Count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.count
}

// Answered returns how many requests were answered while their client was
// still waiting (see Request.Answered).
func (s *Server) Answered() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.answered
}

// Abandoned returns how many requests got no answer because their client
// went away first: it gave up (deadline, cancelled context) while the
// request was held or delayed, or the connection was cut.
func (s *Server) Abandoned() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.abandoned
}

// WaitAbandoned waits until at least n requests have been abandoned (see
// Abandoned), so that a test can be sure the fake has seen a client give
// up. It fails the test if that takes longer than timeout.
func (s *Server) WaitAbandoned(t testing.TB, n int, timeout time.Duration) {
	t.Helper()
	if got, ok := s.waitCount(func() int { return s.abandoned }, n, timeout); !ok {
		t.Fatalf("apnstest: %d requests abandoned after %v, want %d", got, timeout, n)
	}
}

// Authorizations returns the distinct authorization headers received, in
// the order first seen, so that tests can check that a client reuses its
// provider token. Requests without one are not counted.
func (s *Server) Authorizations() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.auths...)
}

// Connections returns how many TCP connections the server has accepted, so
// that tests can check that a client keeps its connection open.
func (s *Server) Connections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns
}

// OpenConnections returns how many of those are still open.
func (s *Server) OpenConnections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.open)
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

// connQueue is the net.Listener of one generation: it yields the
// connections handed to it, until closed.
type connQueue struct {
	addr  net.Addr
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func (q *connQueue) Accept() (net.Conn, error) {
	select {
	case c := <-q.conns:
		return c, nil
	case <-q.done:
		return nil, net.ErrClosed
	}
}

func (q *connQueue) Close() error {
	q.once.Do(func() { close(q.done) })
	return nil
}

func (q *connQueue) Addr() net.Addr { return q.addr }

// trackedConn is an accepted connection, known to the server until closed.
type trackedConn struct {
	net.Conn
	s  *Server
	id int
}

func (c *trackedConn) Close() error {
	c.s.mu.Lock()
	delete(c.s.open, c)
	c.s.mu.Unlock()
	return c.Conn.Close()
}
