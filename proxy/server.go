// Package proxy is the client-facing side of xapsproxy: it accepts IMAP
// connections (implicit TLS or STARTTLS), opens one backend connection per
// client, and forwards commands and responses as a stream, in lock-step with
// the backend wherever the two could read the stream differently
// (continuation.go). It intercepts only what it must: STARTTLS (the proxy
// terminates TLS), XAPPLEPUSHSERVICE (answered here and stored through
// Options.Register), COMPRESS, UNAUTHENTICATE and XCLIENT (refused), ID
// (forwarded without its x- fields), LOGIN and AUTHENTICATE (read whole,
// checked and sent anew; the user noted once the backend accepts),
// SETMETADATA (checked), commands it does not know (refused), and capability
// lists (XAPPLEPUSHSERVICE added after login).
//
// Use: srv := proxy.New(opts); go srv.ServeTLS(ln); ...; srv.Shutdown(ctx).
package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/xapsproxy/xapsproxy/config"
	"github.com/xapsproxy/xapsproxy/store"
)

// Timeouts and limits of the client-facing side.
const (
	handshakeTimeout  = 30 * time.Second // client TLS handshake
	rejectTimeout     = 5 * time.Second  // handshake and BYE for a connection over the limits
	backendTimeout    = 15 * time.Second // dial, TLS and greeting of the backend
	registerTimeout   = 10 * time.Second // storing one registration
	maxLineLength     = 64 << 10         // one command line; Dovecot's imap_max_line_length default
	maxCaptureLength  = 8 << 10          // LOGIN/AUTHENTICATE bytes kept to learn the user name
	maxPreAuthLiteral = 8 << 10          // a literal before login (LOGIN, ID need little)
	maxXAPSLiteral    = 1 << 10          // one literal inside XAPPLEPUSHSERVICE or ID
	maxDiscardLiteral = 64 << 10         // data skipped after a refused command
	maxPipeline       = 1000             // commands forwarded and not yet answered
	// backendWriteTimeout cuts a backend that stops reading what the proxy
	// forwards.
	backendWriteTimeout = time.Minute
	// defaultContinuationTimeout is how long a command may wait for the
	// backend to ask for its data or answer it (it does either at once).
	defaultContinuationTimeout = time.Minute
)

// Options configures a Server. The zero value of each field is noted.
type Options struct {
	// Backend is where every client connection is forwarded. Required.
	Backend config.Backend
	// BackendTLS verifies the backend when Backend.TLS is not "none"; nil
	// means Backend.BaseTLSConfig() (system roots, no ca_file).
	BackendTLS *tls.Config
	// TLS is the configuration presented to clients. Required.
	TLS *tls.Config
	// Topic is the APNs topic told to devices in the XAPPLEPUSHSERVICE reply.
	Topic string
	// Register durably stores a registration; the device gets its OK only
	// after it returns nil. Required.
	Register func(ctx context.Context, r store.Registration) error

	// MaxConnections and MaxConnectionsPerIP bound the client connections,
	// in all and per client address; 0 means no limit.
	MaxConnections, MaxConnectionsPerIP int
	// LoginTimeout is the time from connecting to a successful login; 0
	// means config.DefaultLoginTimeout.
	LoginTimeout time.Duration
	// IdleTimeout ends a logged-in session whose client has been silent
	// this long while no command (other than IDLE) runs; 0 means
	// config.DefaultIdleTimeout.
	IdleTimeout time.Duration
	// WriteTimeout ends a session whose client has not taken a write's
	// worth of data this long (a client that stopped reading); 0 means
	// config.DefaultWriteTimeout.
	WriteTimeout time.Duration
	// ContinuationTimeout ends a session whose backend has neither asked for
	// the data of a command (a literal, IDLE, AUTHENTICATE) nor answered it
	// this long; 0 means one minute.
	ContinuationTimeout time.Duration
	// AllowPlaintextAuth allows LOGIN and AUTHENTICATE before STARTTLS.
	AllowPlaintextAuth bool
	// MasterSeparator is the backend's master-user separator (Dovecot's
	// auth_master_user_separator, e.g. "*"); "" means none. Client logins
	// with it in the user name, or with a SASL authorization identity other
	// than the authentication identity, are master-user logins: refused
	// unless AllowMasterLogins.
	MasterSeparator   string
	AllowMasterLogins bool

	// Captured, if set, is given the password of every login the backend
	// accepted (LOGIN, AUTHENTICATE PLAIN and LOGIN: the mechanisms that
	// send it), with the session's user as the backend names it, for
	// watch.auth = "captured". Never for master-user logins, nor for
	// CRAM-MD5 and SCRAM, which send no password. It is called on the
	// session's backend reader once the backend said OK and before the
	// client is told, which waits for it: it must return soon (a store
	// write bounded by a short timeout is fine). nil: nothing is captured,
	// and the proxy keeps no password once the login command is sent.
	Captured func(user, password string)

	// ProxyProtocol lists the load balancers trusted to send a PROXY
	// protocol header (v1 or v2): a connection from one must start with
	// one, and is then served as the client it names; a connection from
	// any other address that sends one is closed. nil: off, no header is
	// read.
	ProxyProtocol []netip.Prefix
	// ProxyHeaderTimeout bounds the wait for a trusted balancer's header; 0
	// means 5 seconds.
	ProxyHeaderTimeout time.Duration

	// Logger receives connection logs; nil discards them.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Server accepts client connections and runs one session for each.
type Server struct {
	opts         Options
	log          *slog.Logger
	loginTimeout time.Duration
	idleTimeout  time.Duration
	writeTimeout time.Duration
	// continuationTimeout: Options.ContinuationTimeout or its default.
	continuationTimeout time.Duration
	proxyHeaderTimeout  time.Duration

	ctx    context.Context // cancelled by Shutdown after the grace period
	cancel context.CancelFunc

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	sessions  map[*session]struct{}
	headers   map[net.Conn]struct{} // trusted connections whose PROXY header is awaited
	perIP     map[string]int
	closing   bool
	wg        sync.WaitGroup // sessions and rejections
	nextID    atomic.Uint64
	stats     counters
}

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("proxy: server closed")

// New returns a server; it does no I/O.
func New(opts Options) *Server {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		opts:         opts,
		log:          opts.Logger,
		loginTimeout: opts.LoginTimeout,
		idleTimeout:  opts.IdleTimeout,
		writeTimeout: opts.WriteTimeout,
		ctx:          ctx,
		cancel:       cancel,
		listeners:    make(map[net.Listener]struct{}),
		sessions:     make(map[*session]struct{}),
		headers:      make(map[net.Conn]struct{}),
		perIP:        make(map[string]int),
	}
	if s.loginTimeout == 0 {
		s.loginTimeout = config.DefaultLoginTimeout
	}
	if s.idleTimeout == 0 {
		s.idleTimeout = config.DefaultIdleTimeout
	}
	if s.writeTimeout == 0 {
		s.writeTimeout = config.DefaultWriteTimeout
	}
	s.proxyHeaderTimeout = opts.ProxyHeaderTimeout
	if s.proxyHeaderTimeout == 0 {
		s.proxyHeaderTimeout = defaultProxyHeaderTimeout
	}
	s.continuationTimeout = opts.ContinuationTimeout
	if s.continuationTimeout == 0 {
		s.continuationTimeout = defaultContinuationTimeout
	}
	return s
}

// ServeTLS accepts implicit-TLS (IMAPS) connections on ln until Shutdown.
func (s *Server) ServeTLS(ln net.Listener) error { return s.serve(ln, true) }

// ServeSTARTTLS accepts plain connections on ln that upgrade with STARTTLS.
func (s *Server) ServeSTARTTLS(ln net.Listener) error { return s.serve(ln, false) }

func (s *Server) serve(ln net.Listener, implicitTLS bool) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		ln.Close()
		return ErrServerClosed
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
	}()

	var backoff time.Duration
	for {
		conn, err := ln.Accept()
		if err != nil {
			if s.isClosing() || errors.Is(err, net.ErrClosed) {
				return ErrServerClosed
			}
			// Out of file descriptors and the like pass: wait and go on,
			// as net/http does, rather than stop serving.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.Warn("accept failed, retrying", "err", err, "delay", backoff)
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
				continue
			case <-s.ctx.Done():
				t.Stop()
				return ErrServerClosed
			}
		}
		backoff = 0
		if implicitTLS {
			s.stats.acceptedTLS.Add(1)
		} else {
			s.stats.acceptedSTARTTLS.Add(1)
		}
		if s.trustedProxy(conn.RemoteAddr()) {
			if !s.readHeaderThenStart(conn, implicitTLS) {
				return ErrServerClosed
			}
			continue
		}
		if len(s.opts.ProxyProtocol) > 0 {
			conn = s.guard(conn)
		}
		if !s.start(conn, implicitTLS) {
			return ErrServerClosed
		}
	}
}

// start serves conn within the limits, or tells it why not, in a goroutine
// of its own; false means the server is closing (conn is closed).
func (s *Server) start(conn net.Conn, implicitTLS bool) bool {
	sess := newSession(s, conn, implicitTLS, remoteIP(conn))
	switch reason := s.track(sess); reason {
	case "":
		go func() {
			defer s.untrack(sess)
			sess.run(s.ctx)
		}()
	case errClosing:
		conn.Close()
		return false
	default:
		s.log.Warn("connection refused", "remote", conn.RemoteAddr().String(), "reason", reason)
		go func() {
			defer s.wg.Done()
			reject(conn, implicitTLS, s.opts.TLS, reason)
		}()
	}
	return true
}

// readHeaderThenStart reads a trusted balancer's PROXY header in a goroutine
// of its own, then starts the session as the client the header names, so
// that the limits count the client's address and not the balancer's. A
// balancer that sends no valid header in time is cut off. False means the
// server is closing (conn is closed).
func (s *Server) readHeaderThenStart(conn net.Conn, implicitTLS bool) bool {
	s.mu.Lock()
	closing := s.closing
	if !closing {
		s.wg.Add(1)
		s.headers[conn] = struct{}{}
	}
	s.mu.Unlock()
	if closing {
		conn.Close()
		return false
	}
	go func() {
		defer s.wg.Done()
		pc, err := readProxyHeader(conn, s.proxyHeaderTimeout)
		s.mu.Lock()
		delete(s.headers, conn)
		closing := s.closing
		s.mu.Unlock()
		if closing {
			conn.Close()
			return
		}
		if err != nil {
			s.stats.refusedProxyProtocol.Add(1)
			s.log.Warn("connection refused", "remote", conn.RemoteAddr().String(), "reason", "no valid PROXY header from a proxy_protocol address", "err", err)
			conn.Close()
			return
		}
		s.start(pc, implicitTLS)
	}()
	return true
}

// guard wraps an untrusted peer's connection so that a PROXY header from it
// ends the connection instead of reaching the session as client data.
func (s *Server) guard(conn net.Conn) net.Conn {
	return &guardConn{Conn: conn, refused: func() {
		s.stats.refusedProxyProtocol.Add(1)
		s.log.Warn("connection refused", "remote", conn.RemoteAddr().String(), "reason", "PROXY header from an address not in proxy.proxy_protocol")
	}}
}

const errClosing = "closing"

// remoteIP is the key of the per-address limit: the client's IPv4 address,
// or its IPv6 /64, which one site usually has all of.
func remoteIP(conn net.Conn) string {
	host, _, err := net.SplitHostPort(conn.RemoteAddr().String())
	if err != nil {
		return conn.RemoteAddr().String()
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || ip.Unmap().Is4() {
		return host
	}
	prefix, _ := ip.Prefix(64)
	return prefix.String()
}

// reject tells a client over the limits why it cannot be served, within
// rejectTimeout, and hangs up.
func reject(conn net.Conn, implicitTLS bool, tc *tls.Config, reason string) {
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(rejectTimeout))
	if implicitTLS {
		tlsConn := tls.Server(conn, tc)
		if tlsConn.Handshake() != nil {
			return
		}
		conn = tlsConn
	}
	io.WriteString(conn, "* BYE [UNAVAILABLE] "+reason+", try again later\r\n")
}

func (s *Server) isClosing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

// track admits a session within the limits, or says why not ("" = admitted;
// a rejection is counted in wg too, and the caller must call wg.Done).
func (s *Server) track(sess *session) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closing:
		return errClosing
	case s.opts.MaxConnections > 0 && len(s.sessions) >= s.opts.MaxConnections:
		s.wg.Add(1)
		s.stats.refusedMax.Add(1)
		return "Too many connections"
	case s.opts.MaxConnectionsPerIP > 0 && s.perIP[sess.ip] >= s.opts.MaxConnectionsPerIP:
		s.wg.Add(1)
		s.stats.refusedPerIP.Add(1)
		return "Too many connections from your address"
	}
	s.sessions[sess] = struct{}{}
	s.perIP[sess.ip]++
	s.wg.Add(1)
	return ""
}

func (s *Server) untrack(sess *session) {
	s.mu.Lock()
	delete(s.sessions, sess)
	if s.perIP[sess.ip]--; s.perIP[sess.ip] <= 0 {
		delete(s.perIP, sess.ip)
	}
	s.mu.Unlock()
	s.wg.Done()
}

// Shutdown stops accepting and ends every session gracefully: an idle one
// (nothing running but IDLE) is told `* BYE` at once, a busy one after its
// running commands are answered. When ctx expires first, the remaining
// sessions are closed with `* BYE` and Shutdown returns ctx's error.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	for ln := range s.listeners {
		ln.Close()
	}
	for conn := range s.headers {
		conn.Close() // not a session yet: nothing to tell it
	}
	sessions := s.sessionList()
	s.mu.Unlock()

	for _, sess := range sessions {
		sess.drain()
	}
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		s.cancel()
		return nil
	case <-ctx.Done():
	}
	// Out of time: cut the rest short. close returns within about a second
	// each, so they run side by side.
	s.cancel()
	s.mu.Lock()
	sessions = s.sessionList()
	s.mu.Unlock()
	for _, sess := range sessions {
		go sess.bye("Server shutting down")
	}
	<-done
	return ctx.Err()
}

func (s *Server) sessionList() []*session {
	list := make([]*session, 0, len(s.sessions))
	for sess := range s.sessions {
		list = append(list, sess)
	}
	return list
}
