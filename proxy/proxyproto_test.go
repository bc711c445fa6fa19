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
	"net/netip"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"
)

// The balancer in these tests connects from 127.0.0.1; 127.0.0.2 is anyone
// else.
var trustLoopback1 = func(o *Options) {
	o.ProxyProtocol = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	o.Backend.ForwardClientIP = true
}

// dialFrom connects to addr from the local address ip.
func dialFrom(t testing.TB, ip, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: readTimeout}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// prefixConn sends pre in the same write as the first bytes written to it,
// as a balancer does that has the client's first segment at hand.
type prefixConn struct {
	net.Conn
	pre []byte
}

func (c *prefixConn) Write(p []byte) (int, error) {
	if c.pre != nil {
		buf := append(c.pre, p...)
		c.pre = nil
		if _, err := c.Conn.Write(buf); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	return c.Conn.Write(p)
}

func v1Header(src, dst string) []byte {
	s, d := netip.MustParseAddrPort(src), netip.MustParseAddrPort(dst)
	proto := "TCP4"
	if s.Addr().Is6() {
		proto = "TCP6"
	}
	return fmt.Appendf(nil, "PROXY %s %s %s %d %d\r\n", proto, s.Addr(), d.Addr(), s.Port(), d.Port())
}

func v2Header(t testing.TB, src, dst string) []byte {
	t.Helper()
	h := proxyproto.HeaderProxyFromAddrs(2,
		net.TCPAddrFromAddrPort(netip.MustParseAddrPort(src)),
		net.TCPAddrFromAddrPort(netip.MustParseAddrPort(dst)))
	b, err := h.Format()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func v2Local(t testing.TB) []byte {
	t.Helper()
	b, err := (&proxyproto.Header{Version: 2, Command: proxyproto.LOCAL, TransportProtocol: proxyproto.UNSPEC}).Format()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// dialTLSWithHeader connects to the implicit-TLS listener from ip and sends
// header in the same write as the TLS ClientHello.
func (e *proxyEnv) dialTLSWithHeader(t testing.TB, ip string, header []byte) *lineConn {
	t.Helper()
	raw := dialFrom(t, ip, e.tlsAddr)
	tc := tls.Client(&prefixConn{Conn: raw, pre: header}, &tls.Config{RootCAs: e.ca.Pool(), ServerName: "127.0.0.1"})
	tc.SetDeadline(time.Now().Add(readTimeout))
	if err := tc.Handshake(); err != nil {
		t.Fatalf("TLS after the PROXY header: %v", err)
	}
	tc.SetDeadline(time.Time{})
	return newLineConn(t, tc)
}

// idLine is the proxy's ID to the backend with forward_client_ip.
func idLine(src, dst string) string {
	s, d := netip.MustParseAddrPort(src), netip.MustParseAddrPort(dst)
	return fmt.Sprintf(`xaps1 ID ("x-originating-ip" "%s" "x-originating-port" "%d" "x-connected-ip" "%s" "x-connected-port" "%d")`,
		s.Addr(), s.Port(), d.Addr(), d.Port())
}

// A trusted balancer's header, v1 or v2, IPv4 or IPv6, sent in the same
// segment as the TLS ClientHello: the session is the header's client, for
// the backend's ID.
func TestProxyProtocolHeaderNamesTheClient(t *testing.T) {
	t.Parallel()
	b := startFakeBackend(t)
	env := startProxy(t, b.addr(), trustLoopback1)
	for _, tt := range []struct {
		name     string
		header   []byte
		src, dst string
	}{
		{"v1 TCP4", v1Header("203.0.113.7:51234", "192.0.2.1:993"), "203.0.113.7:51234", "192.0.2.1:993"},
		{"v1 TCP6", v1Header("[2001:db8::7]:40000", "[2001:db8::1]:993"), "[2001:db8::7]:40000", "[2001:db8::1]:993"},
		{"v2 TCP4", v2Header(t, "198.51.100.20:6000", "192.0.2.1:993"), "198.51.100.20:6000", "192.0.2.1:993"},
		{"v2 TCP6", v2Header(t, "[2001:db8::8]:7000", "[2001:db8::1]:993"), "[2001:db8::8]:7000", "[2001:db8::1]:993"},
	} {
		client := env.dialTLSWithHeader(t, "127.0.0.1", tt.header)
		backend := b.accept(t, greetingCaps)
		backend.expect(idLine(tt.src, tt.dst))
		backend.send("xaps1 OK ID completed.")
		client.expect(greetingCaps)
		client.send("n1 NOOP")
		backend.expect("n1 NOOP")
		client.conn.Close()
	}
	if n := env.srv.Stats().RefusedProxyProtocol; n != 0 {
		t.Errorf("RefusedProxyProtocol = %d, want 0", n)
	}
}

// On the STARTTLS listener the header comes before the greeting; the
// session then goes on as usual.
func TestProxyProtocolSTARTTLS(t *testing.T) {
	t.Parallel()
	b := startFakeBackend(t)
	env := startProxy(t, b.addr(), trustLoopback1)
	c := dialFrom(t, "127.0.0.1", env.starttlsAddr)
	if _, err := c.Write(v1Header("203.0.113.9:1234", "192.0.2.1:143")); err != nil {
		t.Fatal(err)
	}
	client := newLineConn(t, c)
	backend := b.accept(t, greetingCaps)
	backend.expect(idLine("203.0.113.9:1234", "192.0.2.1:143"))
	backend.send("xaps1 OK ID completed.")
	client.expectPrefix("* OK [CAPABILITY IMAP4rev1 ")
	client.send("c1 CAPABILITY")
	backend.expect("c1 CAPABILITY")
}

// LOCAL (v2 health checks) and UNKNOWN (v1) name no client: the session is
// the balancer's own.
func TestProxyProtocolLocalAndUnknown(t *testing.T) {
	t.Parallel()
	b := startFakeBackend(t)
	env := startProxy(t, b.addr(), trustLoopback1)
	_, proxyPort, _ := net.SplitHostPort(env.tlsAddr)
	for _, header := range [][]byte{v2Local(t), []byte("PROXY UNKNOWN\r\n"), []byte("PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n")} {
		client := env.dialTLSWithHeader(t, "127.0.0.1", header)
		backend := b.accept(t, greetingCaps)
		_, port, _ := net.SplitHostPort(client.conn.LocalAddr().String())
		backend.expect(idLine("127.0.0.1:"+port, "127.0.0.1:"+proxyPort))
		backend.send("xaps1 OK ID completed.")
		client.expect(greetingCaps)
		client.conn.Close()
	}
}

// A trusted balancer that sends no header in time, or a broken one, is cut
// off before the backend is dialed, and counted.
func TestProxyProtocolMissingOrBrokenHeader(t *testing.T) {
	t.Parallel()
	b := startFakeBackend(t)
	env := startProxy(t, b.addr(), func(o *Options) {
		trustLoopback1(o)
		o.ProxyHeaderTimeout = 100 * time.Millisecond
	})
	// Silent: closed at the header timeout.
	silent := newLineConn(t, dialFrom(t, "127.0.0.1", env.tlsAddr))
	silent.expectClosed()
	// A plain client (a TLS ClientHello, no header).
	if err := tls.Client(dialFrom(t, "127.0.0.1", env.tlsAddr), &tls.Config{RootCAs: env.ca.Pool(), ServerName: "127.0.0.1"}).Handshake(); err == nil {
		t.Error("TLS without a PROXY header from a trusted address succeeded")
	}
	// IMAP without a header, and broken headers.
	for _, s := range []string{"a1 CAPABILITY\r\n", "PROXY TCP4 not-an-ip 192.0.2.1 1 2\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", string(v2Header(t, "1.2.3.4:5", "5.6.7.8:9")[:20])} {
		c := newLineConn(t, dialFrom(t, "127.0.0.1", env.starttlsAddr))
		c.sendRaw(s)
		c.expectClosed()
	}
	waitFor(t, "6 refusals counted", func() bool { return env.srv.Stats().RefusedProxyProtocol == 6 })
	select {
	case <-b.conns:
		t.Error("the backend was dialed for a connection without a valid header")
	default:
	}
}

// Shutdown does not wait for a balancer's header: the connection is not a
// session yet, and is closed at once.
func TestProxyProtocolShutdownWhileHeaderAwaited(t *testing.T) {
	t.Parallel()
	b := startFakeBackend(t)
	env := startProxy(t, b.addr(), func(o *Options) {
		trustLoopback1(o)
		o.ProxyHeaderTimeout = time.Hour
	})
	c := newLineConn(t, dialFrom(t, "127.0.0.1", env.tlsAddr))
	waitFor(t, "the header to be awaited", func() bool {
		env.srv.mu.Lock()
		defer env.srv.mu.Unlock()
		return len(env.srv.headers) == 1
	})
	ctx, cancel := context.WithTimeout(t.Context(), readTimeout)
	defer cancel()
	if err := env.srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	c.expectClosed()
}

// A peer not in proxy_protocol is served as itself; a PROXY header from it
// is never believed: the connection is closed, on either listener.
func TestProxyProtocolUntrustedPeer(t *testing.T) {
	t.Parallel()
	b := startFakeBackend(t)
	env := startProxy(t, b.addr(), trustLoopback1)
	_, proxyPort, _ := net.SplitHostPort(env.tlsAddr)

	// A plain client from 127.0.0.2.
	raw := dialFrom(t, "127.0.0.2", env.tlsAddr)
	tc := tls.Client(raw, &tls.Config{RootCAs: env.ca.Pool(), ServerName: "127.0.0.1"})
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	client := newLineConn(t, tc)
	backend := b.accept(t, greetingCaps)
	backend.expect(idLine(raw.LocalAddr().String(), "127.0.0.1:"+proxyPort))
	backend.send("xaps1 OK ID completed.")
	client.expect(greetingCaps)
	// A tag "PROXY" is no header.
	client.send("PROXY NOOP")
	backend.expect("PROXY NOOP")

	// Headers from 127.0.0.2, before TLS.
	for _, h := range [][]byte{v1Header("203.0.113.7:1", "192.0.2.1:993"), v2Header(t, "203.0.113.7:1", "192.0.2.1:993"), v2Local(t)} {
		c := dialFrom(t, "127.0.0.2", env.tlsAddr)
		if err := tls.Client(&prefixConn{Conn: c, pre: h}, &tls.Config{RootCAs: env.ca.Pool(), ServerName: "127.0.0.1"}).Handshake(); err == nil {
			t.Errorf("TLS after an untrusted PROXY header %q succeeded", h)
		}
	}
	// And on the STARTTLS listener, after the greeting.
	c := newLineConn(t, dialFrom(t, "127.0.0.2", env.starttlsAddr))
	backend = b.accept(t, greetingCaps)
	backend.expectPrefix(`xaps1 ID ("x-originating-ip" "127.0.0.2" `)
	backend.send("xaps1 OK ID completed.")
	c.expectPrefix("* OK [CAPABILITY IMAP4rev1 ")
	c.sendRaw(string(v1Header("203.0.113.7:1", "192.0.2.1:143")) + "a1 LOGIN alice secret\r\n")
	c.expectClosed()
	backend.expectClosed()
	waitFor(t, "4 refusals counted", func() bool { return env.srv.Stats().RefusedProxyProtocol == 4 })
}

// max_connections_per_ip counts the header's client, not the balancer.
func TestProxyProtocolPerIPLimit(t *testing.T) {
	t.Parallel()
	b := startFakeBackend(t)
	env := startProxy(t, b.addr(), func(o *Options) {
		trustLoopback1(o)
		o.Backend.ForwardClientIP = false
		o.MaxConnectionsPerIP = 1
	})
	first := env.dialTLSWithHeader(t, "127.0.0.1", v1Header("203.0.113.7:1000", "192.0.2.1:993"))
	b.accept(t, greetingCaps)
	first.expect(greetingCaps)
	other := env.dialTLSWithHeader(t, "127.0.0.1", v2Header(t, "203.0.113.8:1000", "192.0.2.1:993"))
	b.accept(t, greetingCaps)
	other.expect(greetingCaps)
	again := env.dialTLSWithHeader(t, "127.0.0.1", v1Header("203.0.113.7:1001", "192.0.2.1:993"))
	again.expect("* BYE [UNAVAILABLE] Too many connections from your address, try again later")
	again.expectClosed()
	if st := env.srv.Stats(); st.RefusedPerIP != 1 || st.Open != 2 {
		t.Errorf("RefusedPerIP = %d, Open = %d; want 1 and 2", st.RefusedPerIP, st.Open)
	}
}

// Without proxy_protocol nothing is read or refused: a header is client
// data like any other (here, refused as IMAP).
func TestProxyProtocolOff(t *testing.T) {
	t.Parallel()
	b := startFakeBackend(t)
	env := startProxy(t, b.addr(), nil)
	c := newLineConn(t, dialFrom(t, "127.0.0.1", env.starttlsAddr))
	b.accept(t, greetingCaps)
	c.expectPrefix("* OK [CAPABILITY IMAP4rev1 ")
	c.sendRaw(string(v1Header("203.0.113.7:1", "192.0.2.1:143")))
	c.expectPrefix("PROXY BAD ")
}

// byteConn is a connection whose reads come from r, n bytes at a time.
type byteConn struct {
	net.Conn
	r io.Reader
	n int
}

func (c *byteConn) Read(p []byte) (int, error) { return c.r.Read(p[:min(len(p), c.n)]) }

func FuzzProxyHeader(f *testing.F) {
	f.Add(v1Header("203.0.113.7:51234", "192.0.2.1:993"), uint8(3))
	f.Add(v1Header("[2001:db8::7]:1", "[2001:db8::1]:2"), uint8(200))
	f.Add(append(v2Header(f, "198.51.100.20:6000", "192.0.2.1:993"), 0x16, 0x03, 0x01), uint8(1))
	f.Add(v2Local(f), uint8(7))
	f.Add([]byte("PROXY UNKNOWN\r\na1 CAPABILITY\r\n"), uint8(5))
	f.Add([]byte("PROXY NOOP\r\n"), uint8(2))
	f.Add([]byte("a1 LOGIN alice secret\r\n"), uint8(64))
	f.Add([]byte("\r\n\r\n"), uint8(1))
	f.Add([]byte("\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03"), uint8(4))
	peer := &net.TCPAddr{IP: net.ParseIP("10.0.0.5"), Port: 4000}
	self := &net.TCPAddr{IP: net.ParseIP("10.0.0.1"), Port: 993}
	f.Fuzz(func(t *testing.T, data []byte, chunk uint8) {
		n := int(chunk)%32 + 1

		// A trusted peer: the header's addresses, or the peer's; nothing
		// after the header lost.
		br := bufio.NewReaderSize(&byteConn{r: bytes.NewReader(data), n: n}, proxyHeaderBufferSize)
		remote, local, err := parseProxyHeader(br, peer, self)
		if err == nil {
			rest, _ := io.ReadAll(br)
			if !bytes.HasSuffix(data, rest) {
				t.Fatalf("after the header: %q, not a suffix of the input", rest)
			}
			if remote == nil || local == nil {
				t.Fatalf("header read, addresses %v %v", remote, local)
			}
			if proxyPrefix(data) != prefixHeader {
				t.Fatalf("a header accepted from %q, which starts with no signature", data)
			}
		} else if !errors.Is(err, errProxyHeader) {
			t.Fatalf("error %v does not wrap errProxyHeader", err)
		}

		// An untrusted peer: its bytes, untouched, or refused when they
		// start with a header; never an address of the header's.
		refused := 0
		g := &guardConn{Conn: &byteConn{r: bytes.NewReader(data), n: n}, refused: func() { refused++ }}
		got, err := io.ReadAll(g)
		isHeader := proxyPrefix(data) == prefixHeader
		switch {
		case isHeader && (!errors.Is(err, errUntrustedProxyHeader) || len(got) != 0 || refused != 1):
			t.Fatalf("header %q from an untrusted peer: read %q, %v, refused %d times", data, got, err, refused)
		case !isHeader && (err != nil || !bytes.Equal(got, data) || refused != 0):
			t.Fatalf("%q from an untrusted peer: read %q, %v, refused %d times", data, got, err, refused)
		}
	})
}
