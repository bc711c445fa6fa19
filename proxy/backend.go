package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/xapsproxy/xapsproxy/config"
	"github.com/xapsproxy/xapsproxy/internal/imapwire"
)

// backendConn is a backend connection ready to be handed to the client: TLS
// done, greeting read.
type backendConn struct {
	conn          net.Conn
	r             *bufio.Reader
	greeting      []byte
	greetingStale bool // its capability code predates STARTTLS
	preauth       bool
}

// errBackendRefused is returned when the backend greets with BYE or refuses
// a command the proxy needs.
var errBackendRefused = errors.New("backend refused")

// dialBackend connects to the backend, does TLS as configured, reads the
// greeting and, if asked, tells the backend the client's address.
func dialBackend(ctx context.Context, cfg config.Backend, tc *tls.Config, client net.Conn) (*backendConn, error) {
	ctx, cancel := context.WithTimeout(ctx, backendTimeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", cfg.Address)
	if err != nil {
		return nil, fmt.Errorf("dial backend: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			conn.Close()
		}
	}()
	// The deadline bounds the whole setup; context cancellation (Shutdown)
	// also interrupts it.
	if dl, has := ctx.Deadline(); has {
		conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	if tc == nil {
		tc = cfg.BaseTLSConfig()
	}
	if cfg.TLS == config.BackendTLSImplicit {
		tlsConn := tls.Client(conn, tc)
		if err := tlsConn.HandshakeContext(ctx); err != nil {
			return nil, fmt.Errorf("backend TLS: %w", err)
		}
		conn = tlsConn
	}
	b := &backendConn{conn: conn, r: bufio.NewReaderSize(conn, readBufferSize)}
	b.greeting, err = imapwire.ReadLine(b.r, nil, maxLineLength)
	if err != nil {
		return nil, fmt.Errorf("backend greeting: %w", err)
	}
	switch {
	case bytes.HasPrefix(b.greeting, []byte("* OK")):
	case bytes.HasPrefix(b.greeting, []byte("* PREAUTH")) && cfg.TLS == config.BackendTLSStartTLS:
		// Read before TLS, so anyone on the way could have written it; and
		// STARTTLS is not allowed once authenticated.
		return nil, fmt.Errorf("%w: PREAUTH greeting on a connection that must start TLS", errBackendRefused)
	case bytes.HasPrefix(b.greeting, []byte("* PREAUTH")):
		b.preauth = true
	default:
		return nil, fmt.Errorf("%w: greeting %q", errBackendRefused, imapwire.TrimCRLF(b.greeting))
	}
	if cfg.TLS == config.BackendTLSStartTLS {
		if err := b.command("xaps0 STARTTLS"); err != nil {
			return nil, err
		}
		tlsConn := tls.Client(conn, tc)
		if err := tlsConn.HandshakeContext(ctx); err != nil {
			return nil, fmt.Errorf("backend TLS: %w", err)
		}
		b.conn = tlsConn
		b.r = bufio.NewReaderSize(tlsConn, readBufferSize)
		b.greetingStale = true
	}
	if cfg.ForwardClientIP {
		if err := b.command(idCommand("xaps1", client)); err != nil {
			return nil, err
		}
	}
	if !stop() {
		return nil, fmt.Errorf("dial backend: %w", context.Cause(ctx))
	}
	b.conn.SetDeadline(time.Time{})
	ok = true
	return b, nil
}

// command sends a command of the proxy's own and reads up to its tagged
// response, skipping untagged data (and any literals in it).
func (b *backendConn) command(cmd string) error {
	if _, err := io.WriteString(b.conn, cmd+"\r\n"); err != nil {
		return fmt.Errorf("backend: %w", err)
	}
	tag, _, _ := strings.Cut(cmd, " ")
	name := strings.Fields(cmd)[1]
	for {
		line, err := imapwire.ReadLine(b.r, nil, maxLineLength)
		if err != nil {
			return fmt.Errorf("backend %s: %w", name, err)
		}
		if lit, has := imapwire.LiteralSuffix(line); has {
			if _, err := b.r.Discard(int(lit.Size)); err != nil {
				return fmt.Errorf("backend %s: %w", name, err)
			}
			continue
		}
		rest, found := bytes.CutPrefix(line, []byte(tag+" "))
		if !found {
			continue
		}
		if !hasPrefixFold(rest, "OK") {
			return fmt.Errorf("%w: %s: %q", errBackendRefused, name, imapwire.TrimCRLF(rest))
		}
		return nil
	}
}

// idCommand tells Dovecot (and other servers that read these RFC 2971 keys)
// who the real client is; Dovecot honours it from login_trusted_networks.
func idCommand(tag string, client net.Conn) string {
	rip, rport, _ := net.SplitHostPort(client.RemoteAddr().String())
	lip, lport, _ := net.SplitHostPort(client.LocalAddr().String())
	return fmt.Sprintf("%s ID (%s %s %s %s %s %s %s %s)", tag,
		imapwire.Quote("x-originating-ip"), imapwire.Quote(rip),
		imapwire.Quote("x-originating-port"), imapwire.Quote(rport),
		imapwire.Quote("x-connected-ip"), imapwire.Quote(lip),
		imapwire.Quote("x-connected-port"), imapwire.Quote(lport))
}
