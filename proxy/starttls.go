package proxy

import (
	"context"
	"crypto/tls"

	"github.com/xapsproxy/xapsproxy/internal/imapwire"
)

// handleSTARTTLS upgrades the client connection (RFC 9051 section 6.2.1). The
// proxy terminates TLS itself; the backend never sees the command.
func (s *session) handleSTARTTLS(ctx context.Context, tag string, rest []byte) error {
	s.mu.Lock()
	active, authenticated := s.clientTLS, s.authenticated
	s.mu.Unlock()
	switch {
	case active:
		return s.refuse(tag, rest, "BAD TLS is already active")
	case authenticated:
		return s.refuse(tag, rest, "BAD STARTTLS is only valid before login")
	}
	if d := imapwire.NewDecoder(rest, nil); !d.CRLF() {
		return s.refuse(tag, rest, "BAD STARTTLS takes no arguments")
	}
	if err := s.waitDrained(); err != nil {
		return err
	}
	if s.cr.Buffered() > 0 {
		// Plain-text bytes sent after STARTTLS would be taken as if they came
		// over TLS (the CVE-2011-0411 injection): refuse and hang up.
		s.bye("Commands pipelined after STARTTLS")
		return errBadInput
	}
	// wmu is held from the OK to the new writer, so that nothing from the
	// backend goes to the client in clear text in between.
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if _, err := s.cw.WriteString(tag + " OK Begin TLS negotiation now\r\n"); err != nil {
		return err
	}
	if err := s.cw.Flush(); err != nil {
		return err
	}
	tlsConn := tls.Server(s.raw, s.srv.opts.TLS)
	hctx, cancel := context.WithTimeout(ctx, handshakeTimeout)
	defer cancel()
	if err := tlsConn.HandshakeContext(hctx); err != nil {
		s.log.Debug("client STARTTLS handshake failed", "err", err)
		return err
	}
	s.mu.Lock()
	s.clientTLS = true
	s.mu.Unlock()
	s.client = tlsConn
	s.crd.release() // empty: checked above
	s.crd.conn = tlsConn
	s.cr = nil
	s.cw.w = s.deadlineWriter(tlsConn, s.srv.writeTimeout)
	return nil
}
