package main

import (
	"bufio"
	"crypto/tls"
	"net"
	"os"
	"strings"
	"testing"

	"github.com/xapsproxy/xapsproxy/internal/dovecottest"
)

// serve with proxy.proxy_protocol: a balancer's PROXY header names the
// client (in the log, as remote), a balancer without one and another
// address with one are closed, and /metrics counts both.
func TestBinaryProxyProtocol(t *testing.T) {
	t.Parallel()
	s := newStackWith(t, dovecottest.Options{}, "\n[log]\nlevel = \"debug\"\n") // the sessions' log lines
	doc, err := os.ReadFile(s.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	withPP := strings.Replace(string(doc), "[proxy]\n", "[proxy]\nproxy_protocol = [\"127.0.0.2\"]\n", 1)
	if err := os.WriteFile(s.cfgPath, []byte(withPP), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startServe(t, s.cfgPath)
	addr := serveAddr(t, p, "listening", "tls")
	dial := func(from, header string) (net.Conn, *tls.Conn) {
		t.Helper()
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: waitTimeout}
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if header != "" {
			if _, err := c.Write([]byte(header)); err != nil {
				t.Fatal(err)
			}
		}
		return c, tls.Client(c, &tls.Config{RootCAs: s.ca.Pool(), ServerName: "localhost"})
	}

	// Through the balancer: served as the header's client.
	_, tc := dial("127.0.0.2", "PROXY TCP4 203.0.113.7 192.0.2.1 51234 993\r\n")
	if err := tc.Handshake(); err != nil {
		t.Fatalf("TLS after the balancer's header: %v", err)
	}
	if g, err := bufio.NewReader(tc).ReadString('\n'); err != nil || !strings.HasPrefix(g, "* OK ") {
		t.Fatalf("greeting %q, %v", g, err)
	}
	waitUntil(t, "the session logged as the header's client", func() bool {
		return strings.Contains(p.log(), "remote=203.0.113.7:51234 via=127.0.0.2:")
	})
	// The balancer without a header, and a header from elsewhere: closed.
	if _, tc := dial("127.0.0.2", ""); tc.Handshake() == nil {
		t.Error("TLS from the balancer without a header succeeded")
	}
	if _, tc := dial("127.0.0.1", "PROXY TCP4 203.0.113.8 192.0.2.1 1 993\r\n"); tc.Handshake() == nil {
		t.Error("TLS after a header from 127.0.0.1, not in proxy_protocol, succeeded")
	}
	waitUntil(t, "both refusals in /metrics", func() bool {
		_, body := adminGet(t, p, "/metrics")
		n, _ := metricValue(body, `xapsproxy_connections_refused_total{reason="proxy_protocol"}`)
		return n == 2
	})
	if strings.Contains(p.log(), "203.0.113.8") {
		t.Error("the untrusted header's address reached the log")
	}
}
