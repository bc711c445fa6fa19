package proxy

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"net"
	"testing"

	"github.com/xapsproxy/xapsproxy/config"
	"github.com/xapsproxy/xapsproxy/internal/testpki"
)

// backendTLS makes the proxy verify the backend against the given CA file.
func backendTLS(t *testing.T, mode, addr, caFile string) func(*Options) {
	return func(o *Options) {
		o.Backend = config.Backend{Address: addr, TLS: mode, CAFile: caFile}
		tc, err := o.Backend.TLSConfig()
		if err != nil {
			t.Fatal(err)
		}
		o.BackendTLS = tc
	}
}

func TestBackendImplicitTLS(t *testing.T) {
	t.Parallel()
	ca := testpki.NewCA(t)
	b := startFakeBackend(t)
	env := startProxy(t, b.addr(), backendTLS(t, config.BackendTLSImplicit, b.addr(), ca.WriteCA(t, t.TempDir())))
	client := env.dialTLS(t)
	raw := <-b.conns
	tc := tls.Server(raw, &tls.Config{Certificates: []tls.Certificate{ca.ServerCert(t, "127.0.0.1")}})
	backend := newLineConn(t, tc)
	backend.send(greetingCaps)
	client.expect(greetingCaps) // the list is still true: TLS came first
	login(t, client, backend, "alice")
	if !tc.ConnectionState().HandshakeComplete {
		t.Error("no TLS to the backend")
	}
}

func TestBackendSTARTTLS(t *testing.T) {
	t.Parallel()
	ca := testpki.NewCA(t)
	b := startFakeBackend(t)
	env := startProxy(t, b.addr(), backendTLS(t, config.BackendTLSStartTLS, b.addr(), ca.WriteCA(t, t.TempDir())))
	client := env.dialTLS(t)
	plain := b.accept(t, "* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] Dovecot ready.")
	plain.expect("xaps0 STARTTLS")
	plain.send("xaps0 OK Begin TLS negotiation now.")
	tc := tls.Server(plain.conn, &tls.Config{Certificates: []tls.Certificate{ca.ServerCert(t, "127.0.0.1")}})
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	backend := &lineConn{t: t, conn: tc, r: bufio.NewReader(tc)}
	// The greeting's capabilities were those before TLS: the client gets
	// the greeting without them and asks.
	client.expect("* OK Dovecot ready.")
	login(t, client, backend, "alice")
}

func TestBackendCertificateNotTrusted(t *testing.T) {
	t.Parallel()
	trusted, other := testpki.NewCA(t), testpki.NewCA(t)
	b := startFakeBackend(t)
	env := startProxy(t, b.addr(), backendTLS(t, config.BackendTLSImplicit, b.addr(), trusted.WriteCA(t, t.TempDir())))
	client := env.dialTLS(t)
	raw := <-b.conns
	tc := tls.Server(raw, &tls.Config{Certificates: []tls.Certificate{other.ServerCert(t, "127.0.0.1")}})
	go func() {
		tc.Handshake() // fails: the proxy rejects the certificate
		tc.Close()
	}()
	client.expect("* BYE [UNAVAILABLE] Backend server unavailable, try again later")
	client.expectClosed()
}

func TestForwardClientIP(t *testing.T) {
	t.Parallel()
	b := startFakeBackend(t)
	env := startProxy(t, b.addr(), func(o *Options) { o.Backend.ForwardClientIP = true })
	client := env.dialTLS(t)
	backend := b.accept(t, greetingCaps)
	_, clientPort, _ := net.SplitHostPort(client.conn.LocalAddr().String())
	_, proxyPort, _ := net.SplitHostPort(env.tlsAddr)
	backend.expect(fmt.Sprintf(`xaps1 ID ("x-originating-ip" "127.0.0.1" "x-originating-port" "%s" "x-connected-ip" "127.0.0.1" "x-connected-port" "%s")`, clientPort, proxyPort))
	backend.send(`* ID ("name" "Dovecot")`, "xaps1 OK ID completed.")
	// The proxy's own exchange is not shown to the client.
	client.expect(greetingCaps)
	client.send("n1 NOOP")
	backend.expect("n1 NOOP")
}

// A PREAUTH greeting on a backend connection that must start TLS was read
// in plain text, from anyone on the way: the proxy does not trust it.
func TestBackendPREAUTHBeforeSTARTTLS(t *testing.T) {
	t.Parallel()
	ca := testpki.NewCA(t)
	b := startFakeBackend(t)
	env := startProxy(t, b.addr(), backendTLS(t, config.BackendTLSStartTLS, b.addr(), ca.WriteCA(t, t.TempDir())))
	client := env.dialTLS(t)
	b.accept(t, "* PREAUTH [CAPABILITY IMAP4rev1] logged in as alice")
	client.expect("* BYE [UNAVAILABLE] Backend server unavailable, try again later")
	client.expectClosed()
}
