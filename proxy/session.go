package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
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

	// Owned by the client reader (run).
	cr      *bufio.Reader
	lineBuf []byte
	bw      *bufio.Writer // to the backend

	raw    net.Conn // the client's TCP connection, never replaced
	wmu    sync.Mutex
	client net.Conn      // raw, or TLS over it; replaced once by STARTTLS, under wmu
	cw     *bufio.Writer // to the client

	br *bufio.Reader // from the backend; owned by backendLoop once it runs

	mu            sync.Mutex
	backend       net.Conn
	clientTLS     bool
	authenticated bool
	user          string            // login name once the backend said OK
	pending       []string          // forwarded tags not yet completed, oldest first
	authTags      map[string]string // LOGIN/AUTHENTICATE in flight: tag -> user name ("" if unknown)
	contWait      *contWait         // the client reader waits for "+" for a literal
	contMode      *contMode         // lines from the client are continuation data
	drained       chan struct{}     // closed when pending becomes empty
	byeReason     string            // set by bye: told to the client when the session ends

	closeOnce sync.Once
	done      chan struct{}
}

// contWait is a synchronizing literal forwarded to the backend: true on its
// channel means "+" came, false that the command was completed instead.
type contWait struct {
	tag string
	ch  chan bool
}

// contMode is a command during which the client sends continuation data
// rather than commands: IDLE (until DONE) or AUTHENTICATE (until completed).
type contMode struct {
	tag   string
	idle  bool
	mech  string // AUTHENTICATE mechanism, upper case
	lines int    // continuation lines seen
}

func newSession(srv *Server, conn net.Conn, implicitTLS bool) *session {
	id := srv.nextID.Add(1)
	return &session{
		srv:         srv,
		log:         srv.log.With("conn", id, "remote", conn.RemoteAddr().String()),
		implicitTLS: implicitTLS,
		raw:         conn,
		client:      conn,
		authTags:    make(map[string]string),
		done:        make(chan struct{}),
	}
}

func (s *session) run(ctx context.Context) {
	defer s.close()
	s.log.Debug("connected")
	if s.implicitTLS {
		tlsConn := tls.Server(s.client, s.srv.opts.TLS)
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
	s.cr = bufio.NewReaderSize(s.client, bufferSize)
	s.cw = bufio.NewWriterSize(s.client, bufferSize)
	s.wmu.Unlock()

	b, err := dialBackend(ctx, s.srv.opts.Backend, s.srv.opts.BackendTLS, s.client)
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
	select {
	case <-s.done:
		return false
	default:
	}
	s.backend, s.br = b.conn, b.r
	s.bw = bufio.NewWriterSize(b.conn, bufferSize)
	s.authenticated = b.preauth
	return true
}

// close ends the session from any goroutine; it is idempotent and does not
// block for long. A reason set by bye is sent to the client first.
func (s *session) close() {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		close(s.done)
		backend, reason := s.backend, s.byeReason
		s.mu.Unlock()
		if backend != nil {
			backend.Close() // unblocks backendLoop, which may hold wmu
		}
		if reason != "" {
			// A writer stuck on a client that does not read gives up by the
			// deadline, so wmu is free soon after.
			s.raw.SetWriteDeadline(time.Now().Add(time.Second))
			s.wmu.Lock()
			if s.cw != nil {
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
	s.byeReason = reason
	s.mu.Unlock()
	s.close()
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
		line, err := imapwire.ReadLine(s.cr, s.lineBuf, maxLineLength)
		s.lineBuf = line[:0]
		if errors.Is(err, imapwire.ErrLineTooLong) {
			s.bye("Command line too long")
			return err
		}
		if err != nil {
			return err
		}
		if s.continuationLine(line) {
			if err := s.forwardRaw(line); err != nil {
				return err
			}
			continue
		}
		if err := s.dispatch(ctx, line); err != nil {
			return err
		}
	}
}

// dispatch handles one command line: intercepted, or forwarded.
func (s *session) dispatch(ctx context.Context, line []byte) error {
	d := imapwire.NewDecoder(line, nil)
	tag, ok := d.Tag()
	var name string
	if ok && d.SP() {
		name, ok = d.Atom()
	}
	if !ok {
		// Not a command the proxy can read; the backend answers it.
		return s.forward(line, "", nil)
	}
	rest := d.Rest()
	switch strings.ToUpper(name) {
	case "XAPPLEPUSHSERVICE":
		return s.handleXAPPLEPUSHSERVICE(ctx, tag, rest)
	case "STARTTLS":
		return s.handleSTARTTLS(ctx, tag, rest)
	case "COMPRESS":
		return s.refuse(tag, rest, "NO COMPRESS is not available through this proxy")
	case "LOGIN":
		return s.forwardLogin(line, tag)
	case "AUTHENTICATE":
		return s.forwardAuthenticate(line, tag)
	case "IDLE":
		s.mu.Lock()
		s.contMode = &contMode{tag: tag, idle: true}
		s.mu.Unlock()
	}
	return s.forward(line, tag, nil)
}

// refuse answers a command of the proxy's own without forwarding it, after
// reading the rest of it.
func (s *session) refuse(tag string, rest []byte, resp string) error {
	if err := s.waitDrained(); err != nil {
		return err
	}
	d := imapwire.NewDecoder(rest, s.cr)
	d.CheckLiteral = func(imapwire.Literal) error { return imapwire.ErrLiteralRefused }
	if err := s.discard(d); err != nil {
		return err
	}
	return s.writeClient(tag + " " + resp + "\r\n")
}

// discard skips what is left of a command the proxy answers itself.
func (s *session) discard(d *imapwire.Decoder) error {
	if _, err := d.Discard(maxDiscardLiteral); err != nil {
		if errors.Is(err, imapwire.ErrLiteralRefused) {
			s.bye("Literal too large")
		}
		return err
	}
	return nil
}

// waitDrained blocks until every forwarded command has been answered, so a
// reply of the proxy's own comes in order after them.
func (s *session) waitDrained() error {
	// Pipelined commands may still sit in the buffer.
	if err := s.bw.Flush(); err != nil {
		return err
	}
	s.mu.Lock()
	if len(s.pending) == 0 {
		s.mu.Unlock()
		return nil
	}
	if s.drained == nil {
		s.drained = make(chan struct{})
	}
	ch := s.drained
	s.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-s.done:
		return net.ErrClosed
	}
}

func (s *session) authState() (authenticated bool, user string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.authenticated, s.user
}
