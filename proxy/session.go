package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/xapsproxy/xapsproxy/internal/imapwire"
)

// session is one client connection and its backend connection.
//
// Two goroutines: run (the client reader: reads commands, forwards or
// answers them, and is the only writer to the backend) and backendLoop (reads
// backend responses and forwards them). Writes to the client are serialised
// by wmu, held for a whole response so that a reply of the proxy's own never
// lands inside a forwarded one. State both goroutines need is under mu.
type session struct {
	srv         *Server
	log         *slog.Logger
	implicitTLS bool
	raw         net.Conn // the client's TCP connection, never replaced
	ip          string   // the client's address, for the per-address limit

	// Owned by the client reader (run).
	crd     lazyReader    // from the client
	cr      *bufio.Reader // crd's buffer while a command is read
	lineBuf []byte
	bw      lazyWriter // to the backend

	wmu    sync.Mutex
	client net.Conn   // raw, or TLS over it; replaced by STARTTLS under wmu
	cw     lazyWriter // to the client

	// Owned by backendLoop once it runs.
	brd lazyReader    // from the backend
	br  *bufio.Reader // brd's buffer while a response is read

	mu              sync.Mutex
	cond            *sync.Cond // on mu: pending shrank, or the session closed
	backend         net.Conn
	clientTLS       bool
	authenticated   bool
	backendMetadata bool                // the backend's latest capability list has METADATA (RFC 5464)
	user            string              // login name once the backend said OK
	pending         []*command          // forwarded, not yet answered; oldest first
	inflight        map[string]*command // the same, by tag: tags in flight are unique
	waiting         *contWait           // the command waiting for the backend's "+"
	sendingData     *command            // the command whose literal data goes to the backend now
	draining        bool                // Shutdown asked: end after the running command
	readingLiteral  bool                // the client reader waits for the rest of a command from the client
	closed          bool
	byeReason       string      // told to the client when the session ends
	timer           *time.Timer // login deadline, then the idle timeout

	frozen      atomic.Bool        // close set the client's deadline: writers leave it alone
	backendSeen atomic.Int64       // when the backend last sent something, Unix nanoseconds
	cancel      context.CancelFunc // ends the session's context: dialing, handshakes
	closeOnce   sync.Once
	done        chan struct{}
}

func newSession(srv *Server, conn net.Conn, implicitTLS bool, ip string) *session {
	id := srv.nextID.Add(1)
	log := srv.log.With("conn", id, "remote", conn.RemoteAddr().String())
	if pc, ok := conn.(*proxiedConn); ok {
		log = log.With("via", pc.Conn.RemoteAddr().String()) // the balancer
	}
	s := &session{
		srv:         srv,
		log:         log,
		implicitTLS: implicitTLS,
		raw:         conn,
		ip:          ip,
		client:      conn,
		inflight:    make(map[string]*command),
		done:        make(chan struct{}),
	}
	s.cond = sync.NewCond(&s.mu)
	return s
}

func (s *session) run(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	defer s.close()
	s.mu.Lock()
	s.cancel = cancel
	s.timer = time.AfterFunc(s.srv.loginTimeout, s.onTimer)
	closed := s.closed
	s.mu.Unlock()
	if closed {
		cancel()
		return
	}
	s.log.Debug("connected")
	if s.implicitTLS {
		tlsConn := tls.Server(s.raw, s.srv.opts.TLS)
		hctx, cancel := context.WithTimeout(ctx, handshakeTimeout)
		err := tlsConn.HandshakeContext(hctx)
		cancel()
		if err != nil {
			s.log.Debug("client TLS handshake failed", "err", err)
			return
		}
		s.mu.Lock()
		s.clientTLS = true
		s.mu.Unlock()
		s.wmu.Lock()
		s.client = tlsConn
		s.wmu.Unlock()
	}
	s.wmu.Lock()
	s.crd.conn = s.client
	s.cw.w = s.deadlineWriter(s.client, s.srv.writeTimeout)
	s.wmu.Unlock()

	b, err := dialBackend(ctx, s.srv.opts.Backend, s.srv.opts.BackendTLS, s.raw)
	if err != nil {
		s.log.Warn("backend unavailable", "err", err)
		s.writeClient("* BYE [UNAVAILABLE] Backend server unavailable, try again later\r\n")
		return
	}
	if !s.setBackend(b) {
		b.conn.Close()
		return
	}
	if err := s.writeClient(string(s.editCapabilities(b.greeting, b.greetingStale))); err != nil {
		return
	}

	backendDone := make(chan struct{})
	go func() {
		defer close(backendDone)
		err := s.backendLoop()
		s.logEnd("backend", err)
		s.close()
	}()
	err = s.clientLoop(ctx)
	s.logEnd("client", err)
	s.close()
	<-backendDone
}

func (s *session) logEnd(side string, err error) {
	switch {
	case err == nil, errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
		s.log.Debug("connection ended", "side", side)
	default:
		s.log.Debug("connection ended", "side", side, "err", err)
	}
}

// setBackend installs the backend connection unless the session has already
// been closed.
func (s *session) setBackend(b *backendConn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.backend = b.conn
	s.backendSeen.Store(time.Now().UnixNano())
	s.brd = lazyReader{conn: b.conn, br: b.r} // b.r may hold more than the greeting
	s.bw.w = s.deadlineWriter(b.conn, backendWriteTimeout)
	if b.preauth {
		s.authenticated = true
		s.timer.Reset(s.srv.idleTimeout)
	}
	return true
}

// onTimer ends a session that did not log in in time, or that has been
// silent after login for longer than the idle timeout while no command ran.
// A running command keeps the session, as long as the backend is not just
// as silent (a command it never answers, say).
func (s *session) onTimer() {
	s.mu.Lock()
	authenticated, busy, closed := s.authenticated, s.busy(), s.closed
	working := busy && time.Since(time.Unix(0, s.backendSeen.Load())) < s.srv.idleTimeout
	if authenticated && working && !closed {
		s.timer.Reset(s.srv.idleTimeout)
	}
	s.mu.Unlock()
	switch {
	case closed, authenticated && working:
	case !authenticated:
		s.bye("Login timeout")
	case busy:
		s.bye("Autologout: the mail server has not answered for too long")
	default:
		s.bye("Autologout: idle for too long")
	}
}

// close ends the session from any goroutine; it is idempotent and returns
// within about a second. A reason set by bye is sent to the client first.
func (s *session) close() {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		close(s.done)
		s.cond.Broadcast()
		if s.timer != nil {
			s.timer.Stop()
		}
		if s.cancel != nil {
			s.cancel()
		}
		backend, reason := s.backend, s.byeReason
		s.mu.Unlock()
		if backend != nil {
			backend.Close() // unblocks backendLoop, which may hold wmu
		}
		if reason != "" {
			// A writer stuck on a client that does not read, or a TLS
			// handshake in progress, gives up by the deadline and lets go
			// of wmu.
			s.frozen.Store(true)
			s.raw.SetDeadline(time.Now().Add(time.Second))
			s.wmu.Lock()
			if s.cw.w != nil {
				s.cw.WriteString("* BYE " + reason + "\r\n")
				s.cw.Flush()
			}
			s.wmu.Unlock()
		}
		s.raw.Close()
	})
}

// bye ends the session, telling the client why.
func (s *session) bye(reason string) {
	s.mu.Lock()
	if s.byeReason == "" {
		s.byeReason = reason
	}
	s.mu.Unlock()
	s.close()
}

// drain is Shutdown's request: an idle session (nothing running, or only
// IDLE) ends now; a busy one ends after its running commands are answered.
func (s *session) drain() {
	s.mu.Lock()
	s.draining = true
	busy := s.busy()
	s.mu.Unlock()
	if !busy {
		// Not waited for here: a client that does not read holds close up
		// to a second. run waits for it before the session counts as ended.
		go s.bye("Server shutting down")
	}
}

func (s *session) deadlineWriter(conn net.Conn, timeout time.Duration) deadlineWriter {
	return deadlineWriter{conn: conn, timeout: timeout, frozen: &s.frozen}
}

// writeClient writes a complete response of the proxy's own and flushes it.
func (s *session) writeClient(resp string) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if _, err := s.cw.WriteString(resp); err != nil {
		return err
	}
	return s.cw.Flush()
}

// clientLoop reads client commands until the client goes away.
func (s *session) clientLoop(ctx context.Context) error {
	for {
		line, err := s.readLine()
		if err != nil {
			return err
		}
		s.mu.Lock()
		draining := s.draining
		s.mu.Unlock()
		if draining {
			s.bye("Server shutting down")
			return nil
		}
		if err := s.dispatch(ctx, line); err != nil {
			return err
		}
		// Pipelined commands go out together: flush when the next one is
		// not already here.
		if !completeLineBuffered(s.cr) {
			if err := s.bw.Flush(); err != nil {
				return err
			}
		}
	}
}

// readLine reads the next line from the client, blocking (without a buffer)
// while the client is silent. Each line counts as activity for the idle
// timeout.
func (s *session) readLine() ([]byte, error) {
	cr, err := s.crd.next()
	if err != nil {
		return nil, err
	}
	s.cr = cr
	line, err := s.readCommandLine()
	if err != nil {
		return nil, err
	}
	s.touch()
	return line, nil
}

// touch notes activity of the client's: the idle timeout starts again.
func (s *session) touch() {
	s.mu.Lock()
	if s.authenticated {
		s.timer.Reset(s.srv.idleTimeout)
	}
	s.mu.Unlock()
}

// readCommandLine reads the next line of the command being read from s.cr
// (after a literal, say). A line over the limit ends the session.
func (s *session) readCommandLine() ([]byte, error) {
	line, err := imapwire.ReadLine(s.cr, s.lineBuf, maxLineLength)
	s.lineBuf = line[:0]
	if cap(line) > readBufferSize {
		s.lineBuf = nil // a long line's buffer is not kept for an idle session
	}
	if errors.Is(err, imapwire.ErrLineTooLong) {
		s.bye("Command line too long")
	}
	return line, err
}

func (s *session) authState() (authenticated bool, user string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.authenticated, s.user
}

// completeLineBuffered reports whether br holds the whole next line, so a
// flush can wait for it.
func completeLineBuffered(br *bufio.Reader) bool {
	if br == nil {
		return false
	}
	n := br.Buffered()
	if n == 0 {
		return false
	}
	buf, _ := br.Peek(n)
	return bytes.IndexByte(buf, '\n') >= 0
}
