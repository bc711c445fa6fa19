package proxy

import (
	"context"
	"crypto/tls"
	"net"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/xapsproxy/xapsproxy/internal/testpki"
)

func TestLoginTimeout(t *testing.T) {
	t.Parallel()
	b := startFakeBackend(t)
	env := startProxy(t, b.addr(), func(o *Options) { o.LoginTimeout = 300 * time.Millisecond })
	client, _ := env.session(t, b)
	client.expect("* BYE Login timeout")
	client.expectClosed()
}

func TestIdleTimeout(t *testing.T) {
	t.Parallel()
	b := startFakeBackend(t)
	env := startProxy(t, b.addr(), func(o *Options) { o.IdleTimeout = time.Second })

	// Silent, with nothing running: ended.
	client, backend := env.session(t, b)
	login(t, client, backend, "alice")
	client.expect("* BYE Autologout: idle for too long")
	client.expectClosed()

	// IDLE is silence too.
	client, backend = env.session(t, b)
	login(t, client, backend, "alice")
	client.send("i1 IDLE")
	backend.expect("i1 IDLE")
	backend.send("+ idling")
	client.expect("+ idling", "* BYE Autologout: idle for too long")

	// A command that takes long is not silence: the session survives it,
	// as long as the backend is not silent as long.
	client, backend = env.session(t, b)
	login(t, client, backend, "alice")
	client.send("f1 FETCH 1:* BODY[]")
	backend.expect("f1 FETCH 1:* BODY[]")
	time.Sleep(700 * time.Millisecond) // the slow backend
	backend.send("* 1 FETCH (FLAGS ())")
	time.Sleep(700 * time.Millisecond) // longer than the idle timeout in all
	backend.send("f1 OK Fetch completed.")
	client.expect("* 1 FETCH (FLAGS ())", "f1 OK Fetch completed.")

	// A command the backend never answers does not keep the session
	// forever.
	client, backend = env.session(t, b)
	login(t, client, backend, "alice")
	client.send("f2 FETCH 1:* BODY[]")
	backend.expect("f2 FETCH 1:* BODY[]")
	client.expect("* BYE Autologout: the mail server has not answered for too long")
	client.expectClosed()
}

func TestConnectionLimits(t *testing.T) {
	t.Parallel()
	b := startFakeBackend(t)
	env := startProxy(t, b.addr(), func(o *Options) { o.MaxConnectionsPerIP = 2 })
	first, _ := env.session(t, b)
	env.session(t, b)
	third := env.dialTLS(t)
	third.expect("* BYE [UNAVAILABLE] Too many connections from your address, try again later")
	third.expectClosed()
	first.conn.Close()
	waitFor(t, "the slot to free", func() bool {
		env.srv.mu.Lock()
		defer env.srv.mu.Unlock()
		return len(env.srv.sessions) == 1
	})
	env.session(t, b)

	env2 := startProxy(t, b.addr(), func(o *Options) { o.MaxConnections = 1 })
	env2.session(t, b)
	plain := env2.dialPlain(t)
	plain.expect("* BYE [UNAVAILABLE] Too many connections, try again later")
	plain.expectClosed()
}

func TestPreLoginLiterals(t *testing.T) {
	t.Parallel()
	_, client, backend := proxySession(t, nil)
	// A large synchronizing literal is refused before any of it is read.
	client.sendRaw("l1 LOGIN {100000}\r\n")
	client.expect("l1 BAD LOGIN literal too large: 100000 bytes is over the limit of 8192")
	client.send("n1 NOOP")
	backend.expect("n1 NOOP") // the LOGIN never reached the backend
	// A large non-synchronizing one cannot be skipped: the session ends.
	client.sendRaw("l2 LOGIN alice {100000+}\r\n")
	client.expect("* BYE Literal too large")
	client.expectClosed()
}

func TestPlaintextAuthAllowed(t *testing.T) {
	t.Parallel()
	b := startFakeBackend(t)
	env := startProxy(t, b.addr(), func(o *Options) { o.AllowPlaintextAuth = true })
	plain := env.dialPlain(t)
	backend := b.accept(t, greetingCaps)
	plain.expect("* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ AUTH=PLAIN AUTH=LOGIN STARTTLS] Dovecot ready.")
	login(t, plain, backend, "alice")
}

func TestClientIDCannotClaimAnAddress(t *testing.T) {
	t.Parallel()
	b := startFakeBackend(t)
	env := startProxy(t, b.addr(), func(o *Options) { o.Backend.ForwardClientIP = true })
	client := env.dialTLS(t)
	backend := b.accept(t, greetingCaps)
	backend.expectPrefix("xaps1 ID (")
	backend.send("xaps1 OK ID completed.")
	client.expect(greetingCaps)
	client.sendRaw(`i1 ID ("name" "iPhone Mail" "X-Originating-IP" "6.6.6.6" "version" {4}` + "\r\n")
	client.expect("+ Ready for literal data")
	client.sendRaw(`17.1 "x-session-id" "s")` + "\r\n")
	backend.expect(`i1 ID ("name" "iPhone Mail" "version" "17.1")`)
	backend.send(`* ID ("name" "Dovecot")`, "i1 OK ID completed.")
	client.expect(`* ID ("name" "Dovecot")`, "i1 OK ID completed.")
	client.send("i2 ID NIL")
	backend.expect("i2 ID NIL")
	backend.send("i2 OK ID completed.")
	client.expect("i2 OK ID completed.")
	client.send("i3 ID (bad")
	client.expect("i3 BAD ID expected space")
}

func TestGracefulShutdown(t *testing.T) {
	t.Parallel()
	b := startFakeBackend(t)
	env := startProxy(t, b.addr(), nil)
	idle, _ := env.session(t, b)
	busy, busyBackend := env.session(t, b)
	login(t, busy, busyBackend, "alice")
	busy.send("f1 FETCH 1 BODY[]")
	busyBackend.expect("f1 FETCH 1 BODY[]")

	done := make(chan error, 1)
	go func() { done <- env.srv.Shutdown(context.Background()) }()
	idle.expect("* BYE Server shutting down")
	idle.expectClosed()
	// The running command finishes, then the session ends.
	busyBackend.send("* 1 FETCH (BODY[] {2}", "hi)", "f1 OK Fetch completed.")
	busy.expect("* 1 FETCH (BODY[] {2}", "hi)", "f1 OK Fetch completed.", "* BYE Server shutting down")
	busy.expectClosed()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestShutdownDeadline(t *testing.T) {
	t.Parallel()
	b := startFakeBackend(t)
	env := startProxy(t, b.addr(), nil)
	var clients []*lineConn
	for range 5 {
		c, backend := env.session(t, b)
		login(t, c, backend, "alice")
		c.send("f1 FETCH 1:* BODY[]")
		backend.expect("f1 FETCH 1:* BODY[]") // and never answered
		clients = append(clients, c)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := env.srv.Shutdown(ctx); err != context.DeadlineExceeded {
		t.Errorf("Shutdown = %v, want the deadline error", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Shutdown took %v", d)
	}
	for _, c := range clients {
		c.expect("* BYE Server shutting down")
	}
}

func TestNoGoroutineLeaks(t *testing.T) {
	// Not parallel: counts the goroutines of the whole test binary.
	before := runtime.NumGoroutine()
	func() {
		b := startFakeBackend(t)
		srvEnv := startProxy(t, b.addr(), nil)
		for range 5 {
			client, backend := srvEnv.session(t, b)
			login(t, client, backend, "alice")
			client.send("i1 IDLE")
			backend.expect("i1 IDLE")
		}
		plain := srvEnv.dialPlain(t)
		b.accept(t, greetingCaps)
		plain.readLine()
		if err := srvEnv.srv.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
		b.ln.Close()
	}()
	waitFor(t, "goroutines to end", func() bool { return runtime.NumGoroutine() <= before+2 })
}

func TestCertificateReload(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	oldCA, newCA := testpki.NewCA(t), testpki.NewCA(t)
	certFile, keyFile := testpki.WritePEM(t, dir, "proxy", oldCA.ServerCert(t, "127.0.0.1"))
	cert, err := LoadCertificate(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	b := startFakeBackend(t)
	env := startProxy(t, b.addr(), func(o *Options) { o.TLS = cert.TLSConfig() })
	env.ca = oldCA
	before, beforeBackend := env.session(t, b)

	newCert, newKey := testpki.WritePEM(t, t.TempDir(), "proxy", newCA.ServerCert(t, "127.0.0.1"))
	for _, f := range [][2]string{{newCert, certFile}, {newKey, keyFile}} {
		data, err := os.ReadFile(f[0])
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f[1], data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := cert.Reload(); err != nil {
		t.Fatal(err)
	}
	env.ca = newCA
	env.session(t, b) // verifies against the new CA
	if _, err := tls.Dial("tcp", env.tlsAddr, &tls.Config{RootCAs: oldCA.Pool(), ServerName: "127.0.0.1"}); err == nil {
		t.Error("a new connection still gets the old certificate")
	}
	// The session from before goes on.
	login(t, before, beforeBackend, "alice")

	// A broken file keeps the current certificate.
	if err := os.WriteFile(certFile, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := cert.Reload(); err == nil {
		t.Error("Reload accepted a broken certificate")
	}
	env.session(t, b)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(readTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond) // polling interval, not synchronisation
	}
}

// Without forward_client_ip too: the proxy may be trusted by the backend.
func TestClientIDStrippedWithoutForwarding(t *testing.T) {
	t.Parallel()
	_, client, backend := proxySession(t, nil)
	client.send(`i1 ID ("x-originating-ip" "6.6.6.6" "name" "n" "os" NIL)`)
	backend.expect(`i1 ID ("name" "n" "os" NIL)`)
	backend.send("i1 OK ID completed.")
	client.expect("i1 OK ID completed.")
	client.send(`i2 ID ("x-originating-ip" "6.6.6.6")`)
	backend.expect(`i2 ID NIL`)
}

func TestRemoteIPKey(t *testing.T) {
	t.Parallel()
	for addr, want := range map[string]string{
		"192.0.2.7:993":               "192.0.2.7",
		"[2001:db8:1:2:3:4:5:6]:993":  "2001:db8:1:2::/64",
		"[2001:db8:1:2:ffff::1]:1234": "2001:db8:1:2::/64",
		"[::ffff:192.0.2.7]:993":      "192.0.2.7",
		"[fe80::1%eth0]:993":          "fe80::/64",
	} {
		tcp, err := net.ResolveTCPAddr("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		if got := remoteIP(fakeAddrConn{addr: tcp}); got != want {
			t.Errorf("%s: key %q, want %q", addr, got, want)
		}
	}
}

type fakeAddrConn struct {
	net.Conn
	addr net.Addr
}

func (c fakeAddrConn) RemoteAddr() net.Addr { return c.addr }
