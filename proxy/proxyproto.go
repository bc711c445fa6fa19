package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/pires/go-proxyproto"
)

// The PROXY protocol (HAProxy's proxy-protocol.txt, v1 text and v2 binary)
// lets a TCP load balancer in front of the proxy tell it who the client is:
// the balancer writes one header before the client's first byte. Only a peer
// in Options.ProxyProtocol is believed, and such a peer must send one; any
// other peer that sends one is cut off, so nobody can claim another address.

// defaultProxyHeaderTimeout bounds the wait for a trusted balancer's header.
const defaultProxyHeaderTimeout = 5 * time.Second

// proxyHeaderBufferSize buffers the header's reads: the v2 header is read a
// byte at a time after a 12-byte peek, and whatever follows it (a TLS
// ClientHello in the same segment) stays buffered for the session.
const proxyHeaderBufferSize = 256

var (
	// errProxyHeader: a trusted peer sent no header, or a broken one.
	errProxyHeader = errors.New("proxy protocol header")
	// errUntrustedProxyHeader: a peer outside proxy_protocol sent a header.
	errUntrustedProxyHeader = errors.New("PROXY header from an address not in proxy.proxy_protocol")
)

// trustedProxy reports whether peer may (and must) send a PROXY header.
func (s *Server) trustedProxy(peer net.Addr) bool {
	if len(s.opts.ProxyProtocol) == 0 {
		return false
	}
	ap, ok := addrPort(peer)
	if !ok {
		return false
	}
	for _, p := range s.opts.ProxyProtocol {
		if p.Contains(ap.Addr()) {
			return true
		}
	}
	return false
}

func addrPort(a net.Addr) (netip.AddrPort, bool) {
	if t, ok := a.(*net.TCPAddr); ok {
		ap := t.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), ap.Addr().IsValid()
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), true
}

// proxiedConn is a balancer's connection once its header is read: its
// addresses are the header's (the client's, and the address the client
// connected to), and its reads start with what was buffered after the
// header.
type proxiedConn struct {
	net.Conn
	br            *bufio.Reader // nil once drained: reads go to Conn
	remote, local net.Addr
}

func (c *proxiedConn) Read(p []byte) (int, error) {
	if c.br != nil {
		if c.br.Buffered() > 0 {
			return c.br.Read(p)
		}
		c.br = nil
	}
	return c.Conn.Read(p)
}

func (c *proxiedConn) RemoteAddr() net.Addr { return c.remote }
func (c *proxiedConn) LocalAddr() net.Addr  { return c.local }

// readProxyHeader reads the PROXY header a trusted balancer must send
// first, within timeout, and returns the connection as the client's. A
// LOCAL command (v2 health checks) or UNKNOWN (v1) keeps the balancer's own
// addresses. conn's deadline is cleared again on success.
func readProxyHeader(conn net.Conn, timeout time.Duration) (net.Conn, error) {
	conn.SetReadDeadline(time.Now().Add(timeout))
	br := bufio.NewReaderSize(conn, proxyHeaderBufferSize)
	remote, local, err := parseProxyHeader(br, conn.RemoteAddr(), conn.LocalAddr())
	if err != nil {
		return nil, err
	}
	conn.SetReadDeadline(time.Time{})
	return &proxiedConn{Conn: conn, br: br, remote: remote, local: local}, nil
}

// parseProxyHeader reads one header from br: the addresses it names, or
// peer and self when it names none.
func parseProxyHeader(br *bufio.Reader, peer, self net.Addr) (remote, local net.Addr, err error) {
	h, err := proxyproto.Read(br)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", errProxyHeader, err)
	}
	if h.Command.IsLocal() {
		return peer, self, nil
	}
	src, dst, ok := h.TCPAddrs()
	if !ok {
		// UNKNOWN (v1), or UDP and unix sockets (v2): no client address.
		return peer, self, nil
	}
	return unmapTCP(src), unmapTCP(dst), nil
}

func unmapTCP(a *net.TCPAddr) *net.TCPAddr {
	ap := a.AddrPort()
	return net.TCPAddrFromAddrPort(netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()))
}

// Signatures that begin a PROXY header: v1's with each of its protocols
// (an IMAP client may use the tag "PROXY", but has no TCP4 command), and
// v2's.
var proxySignatures = [][]byte{
	[]byte("PROXY TCP4 "), []byte("PROXY TCP6 "), []byte("PROXY UNKNOWN"),
	proxyproto.SIGV2,
}

// guardConn is an untrusted peer's connection while proxy_protocol is set:
// it holds back the first bytes while they could begin a PROXY header, and
// fails the read, calling refused once, when they do.
type guardConn struct {
	net.Conn
	refused func()
	checked bool
	held    []byte
	once    sync.Once
}

func (g *guardConn) Read(p []byte) (int, error) {
	for !g.checked {
		switch proxyPrefix(g.held) {
		case prefixNone:
			g.checked = true
		case prefixHeader:
			g.once.Do(g.refused)
			return 0, errUntrustedProxyHeader
		default:
			var buf [16]byte
			n, err := g.Conn.Read(buf[:])
			g.held = append(g.held, buf[:n]...)
			if err != nil && n == 0 {
				if len(g.held) == 0 {
					return 0, err
				}
				g.checked = true // deliver what came; the error comes again
			}
		}
	}
	if len(g.held) > 0 {
		n := copy(p, g.held)
		g.held = g.held[n:]
		if len(g.held) == 0 {
			g.held = nil
		}
		return n, nil
	}
	return g.Conn.Read(p)
}

const (
	prefixMaybe  = iota // b is a proper prefix of a signature: read on
	prefixNone          // b begins no signature
	prefixHeader        // b begins with a signature
)

func proxyPrefix(b []byte) int {
	maybe := false
	for _, sig := range proxySignatures {
		switch {
		case bytes.HasPrefix(b, sig):
			return prefixHeader
		case bytes.HasPrefix(sig, b):
			maybe = true
		}
	}
	if maybe {
		return prefixMaybe
	}
	return prefixNone
}
