package proxy

import (
	"crypto/tls"
	"net/netip"
	"strings"
	"testing"

	"github.com/xapsproxy/xapsproxy/internal/dovecottest"
)

// Behind a load balancer (at 127.0.0.2, in proxy_protocol) that sends PROXY
// headers, with forward_client_ip, the real Dovecot logs the address the
// header names for each login, over implicit TLS (v2) and STARTTLS (v1); a
// client at 127.0.0.3 is logged as itself, and its own header gets it
// nowhere.
func TestProxyProtocolClientIPInDovecotLog(t *testing.T) {
	t.Parallel()
	d := dovecottest.Start(t, dovecottest.Options{
		Users:       map[string]string{"alice": "alicepw", "bob": "bobpw", "carol": "carolpw", "dave": "davepw"},
		ExtraConfig: "login_trusted_networks = 127.0.0.1/32",
	})
	env := clientProxy(t, d, func(o *Options) {
		o.Backend.ForwardClientIP = true
		o.ProxyProtocol = []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}
	})
	tlsConfig := &tls.Config{RootCAs: env.ca.Pool(), ServerName: "127.0.0.1"}
	login := func(c *lineConn, user string) {
		t.Helper()
		c.send("l LOGIN " + user + " " + d.Password(user))
		c.expectUntil("l OK ")
		c.send("o LOGOUT")
		c.expectUntil("o OK ")
	}

	// alice: through the balancer, implicit TLS, a v2 header in the
	// ClientHello's segment.
	c := env.dialTLSWithHeader(t, "127.0.0.2", v2Header(t, "192.0.2.44:40000", "198.51.100.9:993"))
	c.expectPrefix("* OK ")
	login(c, "alice")
	// bob: through the balancer, STARTTLS, a v1 header.
	raw := dialFrom(t, "127.0.0.2", env.starttlsAddr)
	if _, err := raw.Write(v1Header("203.0.113.5:50000", "198.51.100.9:143")); err != nil {
		t.Fatal(err)
	}
	c = newLineConn(t, raw)
	c.expectPrefix("* OK ")
	c.send("s STARTTLS")
	c.expectUntil("s OK ")
	tc := tls.Client(raw, tlsConfig)
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	login(newLineConn(t, tc), "bob")
	// carol: directly from 127.0.0.3, no header.
	tc = tls.Client(dialFrom(t, "127.0.0.3", env.tlsAddr), tlsConfig)
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	c = newLineConn(t, tc)
	c.expectPrefix("* OK ")
	login(c, "carol")
	// dave: from 127.0.0.3 with a header of his own, on STARTTLS: cut off.
	c = newLineConn(t, dialFrom(t, "127.0.0.3", env.starttlsAddr))
	c.expectPrefix("* OK ")
	c.sendRaw(string(v1Header("10.9.9.9:1", "198.51.100.9:143")) + "l LOGIN dave " + d.Password("dave") + "\r\n")
	c.expectClosed()

	want := map[string]string{
		"alice": "rip=192.0.2.44, lip=198.51.100.9",
		"bob":   "rip=203.0.113.5, lip=198.51.100.9",
		"carol": "rip=127.0.0.3, lip=127.0.0.1",
	}
	got := dovecotLoginAddrs(t, d, len(want))
	for user, w := range want {
		if got[user] != w {
			t.Errorf("%s's login: Dovecot logged %q, want %q", user, got[user], w)
		}
	}
	if _, ok := got["dave"]; ok || strings.Contains(d.Log(), "10.9.9.9") {
		t.Errorf("dave's own header got through: %q", got["dave"])
	}
	if n := env.srv.Stats().RefusedProxyProtocol; n != 1 {
		t.Errorf("RefusedProxyProtocol = %d, want 1 (dave)", n)
	}
	if t.Failed() {
		t.Logf("Dovecot's log:\n%s", d.Log())
	}
}
