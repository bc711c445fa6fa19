// Package proxy is the client-facing side of xapsproxy: it accepts IMAP
// connections (implicit TLS or STARTTLS), opens one backend connection per
// client, and forwards bytes both ways as a stream. It intercepts only what it
// must: STARTTLS (the proxy terminates TLS), XAPPLEPUSHSERVICE (answered here
// and stored through Options.Register), COMPRESS (refused; it would hide the
// stream), LOGIN and AUTHENTICATE (forwarded, with the user name noted once the
// backend accepts), and capability lists (XAPPLEPUSHSERVICE added after login).
//
// Use: srv := proxy.New(opts); go srv.ServeTLS(ln); ...; srv.Shutdown(ctx).
package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/xapsproxy/xapsproxy/config"
	"github.com/xapsproxy/xapsproxy/store"
)

// Timeouts and limits of the client-facing side.
const (
	handshakeTimeout  = 30 * time.Second // client TLS handshake
	backendTimeout    = 15 * time.Second // dial, TLS and greeting of the backend
	registerTimeout   = 10 * time.Second // storing one registration
	maxLineLength     = 64 << 10         // one command line; Dovecot's imap_max_line_length default
	maxCaptureLength  = 8 << 10          // LOGIN/AUTHENTICATE bytes kept to learn the user name
	maxXAPSLiteral    = 1 << 10          // one literal inside XAPPLEPUSHSERVICE
	maxDiscardLiteral = 64 << 10         // data skipped after a refused command
	bufferSize        = 4 << 10          // bufio size per direction
)

// Options configures a Server. The zero value of each field is noted.
type Options struct {
	// Backend is where every client connection is forwarded. Required.
	Backend config.Backend
	// BackendTLS verifies the backend when Backend.TLS is not "none"; nil
	// means system roots and the host part of Backend.Address.
	BackendTLS *tls.Config
	// TLS is the configuration presented to clients. Required.
	TLS *tls.Config
	// Topic is the APNs topic told to devices in the XAPPLEPUSHSERVICE reply.
	Topic string
	// Register durably stores a registration; the device gets its OK only
	// after it returns nil. Required.
	Register func(ctx context.Context, r store.Registration) error
	// Logger receives connection logs; nil discards them.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Server accepts client connections and runs one session for each.
type Server struct {
	opts Options
	log  *slog.Logger

	ctx    context.Context // cancelled by Shutdown after the grace period
	cancel context.CancelFunc

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	sessions  map[*session]struct{}
	closing   bool
	wg        sync.WaitGroup // sessions
	nextID    atomic.Uint64
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
	return &Server{
		opts:      opts,
		log:       opts.Logger,
		ctx:       ctx,
		cancel:    cancel,
		listeners: make(map[net.Listener]struct{}),
		sessions:  make(map[*session]struct{}),
	}
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
			if s.isClosing() {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				// Out of file descriptors and similar: wait, as net/http does.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.log.Warn("accept failed, retrying", "err", err, "delay", backoff)
				select {
				case <-time.After(backoff):
					continue
				case <-s.ctx.Done():
					return ErrServerClosed
				}
			}
			return fmt.Errorf("accept: %w", err)
		}
		backoff = 0
		sess := newSession(s, conn, implicitTLS)
		if !s.track(sess) {
			conn.Close()
			return ErrServerClosed
		}
		go func() {
			defer s.untrack(sess)
			sess.run(s.ctx)
		}()
	}
}

func (s *Server) isClosing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

func (s *Server) track(sess *session) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	s.sessions[sess] = struct{}{}
	s.wg.Add(1)
	return true
}

func (s *Server) untrack(sess *session) {
	s.mu.Lock()
	delete(s.sessions, sess)
	s.mu.Unlock()
	s.wg.Done()
}

// Shutdown stops accepting, tells every client `* BYE` and closes its
// connection, then waits for the sessions to end or ctx to expire.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	for ln := range s.listeners {
		ln.Close()
	}
	sessions := make([]*session, 0, len(s.sessions))
	for sess := range s.sessions {
		sessions = append(sessions, sess)
	}
	s.mu.Unlock()

	for _, sess := range sessions {
		sess.bye("Server shutting down")
	}
	s.cancel()
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
