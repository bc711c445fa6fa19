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
	"testing"
	"time"

	"github.com/xapsproxy/xapsproxy/config"
	"github.com/xapsproxy/xapsproxy/internal/testlog"
	"github.com/xapsproxy/xapsproxy/internal/testpki"
	"github.com/xapsproxy/xapsproxy/store"
)

const (
	testTopic   = "com.apple.mail.XServer.d19011df-561b-444d-ac59-09459e74a5e6"
	readTimeout = 10 * time.Second
	v2Line      = "a2 XAPPLEPUSHSERVICE aps-version 2 aps-account-id 0715A26B-CA09-4730-A419-793000CA982E aps-device-token 2918390218931890821908309283098109381029309829018310983092892829 aps-subtopic com.apple.mobilemail mailboxes (INBOX Notes)"
	v1Line      = `tag1 XAPPLEPUSHSERVICE "aps-version" "1" "aps-account-id" "E8CD34AD-98D3-4489-A6BB-86B1D082FECE" "aps-device-token" "a66216ad1683d48b9933cdcc3b98a833ee1a968143f41ea494187da54715da66" "aps-subtopic" "com.apple.mobilemail"`
)

// wantXAPSReply is the whole answer to a registration of version, tagged tag:
// a line per registered mailbox (written as the test gives it: `"INBOX"`,
// or a literal "{3}\r\nabc"),
// the version and topic, the tagged OK. v1Line and v2Line register INBOX,
// and INBOX and Notes.
func wantXAPSReply(tag, version string, mailboxes ...string) []string {
	var out []string
	for _, m := range mailboxes {
		out = append(out, strings.Split(`* XAPPLEPUSHSERVICE "mailbox" `+m, "\r\n")...)
	}
	return append(out, `* XAPPLEPUSHSERVICE aps-version "`+version+`" aps-topic "`+testTopic+`"`, tag+" OK XAPPLEPUSHSERVICE completed.")
}

// proxyEnv is a proxy on 127.0.0.1 with both listeners, recording what it
// registers.
type proxyEnv struct {
	ca           *testpki.CA
	srv          *Server
	tlsAddr      string
	starttlsAddr string

	mu   sync.Mutex
	regs []store.Registration
	fail error // returned by Register when set
}

func startProxy(t testing.TB, backendAddr string, mod func(*Options)) *proxyEnv {
	t.Helper()
	env := &proxyEnv{ca: testpki.NewCA(t)}
	cert := env.ca.ServerCert(t, "127.0.0.1", "localhost")
	opts := Options{
		Backend: config.Backend{Address: backendAddr, TLS: config.BackendTLSNone},
		TLS:     &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		Topic:   testTopic,
		Register: func(ctx context.Context, r store.Registration) error {
			env.mu.Lock()
			defer env.mu.Unlock()
			if env.fail != nil {
				return env.fail
			}
			env.regs = append(env.regs, r)
			return nil
		},
		Logger: testLogger(t),
	}
	if mod != nil {
		mod(&opts)
	}
	env.srv = New(opts)
	tlsLn := listen(t)
	startLn := listen(t)
	env.tlsAddr, env.starttlsAddr = tlsLn.Addr().String(), startLn.Addr().String()
	served := make(chan error, 2)
	go func() { served <- env.srv.ServeTLS(tlsLn) }()
	go func() { served <- env.srv.ServeSTARTTLS(startLn) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := env.srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		for range 2 {
			if err := <-served; !errors.Is(err, ErrServerClosed) {
				t.Errorf("Serve returned %v, want ErrServerClosed", err)
			}
		}
	})
	return env
}

func (e *proxyEnv) registrations() []store.Registration {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]store.Registration(nil), e.regs...)
}

func listen(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// lineConn is either end of an IMAP conversation in a test, read line by
// line with a deadline.
type lineConn struct {
	t    testing.TB
	conn net.Conn
	r    *bufio.Reader
}

func newLineConn(t testing.TB, c net.Conn) *lineConn {
	t.Cleanup(func() { c.Close() })
	return &lineConn{t: t, conn: c, r: bufio.NewReader(c)}
}

// send writes lines, each followed by CRLF, in one write.
func (c *lineConn) send(lines ...string) {
	c.t.Helper()
	if _, err := io.WriteString(c.conn, strings.Join(lines, "\r\n")+"\r\n"); err != nil {
		c.t.Fatalf("send: %v", err)
	}
}

// sendRaw writes bytes as they are.
func (c *lineConn) sendRaw(s string) {
	c.t.Helper()
	if _, err := io.WriteString(c.conn, s); err != nil {
		c.t.Fatalf("send: %v", err)
	}
}

func (c *lineConn) readLine() string {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(readTimeout))
	line, err := c.r.ReadString('\n')
	if err != nil {
		c.t.Fatalf("read: %v (got %q)", err, line)
	}
	return strings.TrimSuffix(line, "\r\n")
}

// expect reads lines and compares each with the wanted one.
func (c *lineConn) expect(want ...string) {
	c.t.Helper()
	for _, w := range want {
		if got := c.readLine(); got != w {
			c.t.Fatalf("read %q, want %q", got, w)
		}
	}
}

// expectClosed checks that the peer closes without sending more.
func (c *lineConn) expectClosed() {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(readTimeout))
	if line, err := c.r.ReadString('\n'); err == nil {
		c.t.Fatalf("read %q, want the connection closed", line)
	}
}

// fakeBackend is a scripted IMAP server: each accepted connection is handed
// to the test.
type fakeBackend struct {
	ln    net.Listener
	conns chan net.Conn
}

func startFakeBackend(t testing.TB) *fakeBackend {
	b := &fakeBackend{ln: listen(t), conns: make(chan net.Conn, 16)}
	t.Cleanup(func() { b.ln.Close() })
	go func() {
		for {
			c, err := b.ln.Accept()
			if err != nil {
				return
			}
			b.conns <- c
		}
	}()
	return b
}

func (b *fakeBackend) addr() string { return b.ln.Addr().String() }

// accept returns the next backend connection, after sending greeting.
func (b *fakeBackend) accept(t testing.TB, greeting string) *lineConn {
	t.Helper()
	select {
	case c := <-b.conns:
		lc := newLineConn(t, c)
		lc.send(greeting)
		return lc
	case <-time.After(readTimeout):
		t.Fatal("the proxy did not connect to the backend")
		return nil
	}
}

// dialTLS connects a client to the proxy's implicit-TLS listener.
func (e *proxyEnv) dialTLS(t testing.TB) *lineConn {
	t.Helper()
	return e.dialTLSAt(t, e.tlsAddr)
}

func (e *proxyEnv) dialTLSAt(t testing.TB, addr string) *lineConn {
	t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: e.ca.Pool(), ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	return newLineConn(t, c)
}

// dialPlain connects a client to the STARTTLS listener.
func (e *proxyEnv) dialPlain(t *testing.T) *lineConn {
	t.Helper()
	c, err := net.Dial("tcp", e.starttlsAddr)
	if err != nil {
		t.Fatal(err)
	}
	return newLineConn(t, c)
}

const (
	greetingCaps = "* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ AUTH=PLAIN AUTH=LOGIN] Dovecot ready."
	loginOKCaps  = "OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT LITERAL+ NOTIFY COMPRESS=DEFLATE] Logged in"
)

// session connects a TLS client through the proxy to the fake backend and
// returns both ends after the greeting.
func (e *proxyEnv) session(t testing.TB, b *fakeBackend) (client, backend *lineConn) {
	t.Helper()
	client = e.dialTLS(t)
	backend = b.accept(t, greetingCaps)
	client.expect("* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ AUTH=PLAIN AUTH=LOGIN] Dovecot ready.")
	return client, backend
}

// login runs a LOGIN through the proxy, answered OK by the backend.
func login(t *testing.T, client, backend *lineConn, user string) {
	t.Helper()
	client.send("l1 LOGIN " + user + " secret")
	backend.expect("l1 LOGIN " + user + " secret")
	backend.send("l1 " + loginOKCaps)
	client.expect("l1 OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT LITERAL+ NOTIFY XAPPLEPUSHSERVICE] Logged in")
}

// answerSync plays the backend's part in the proxy's resync (after a command
// answered instead of asking for a literal's data): the proxy's own NOOP,
// answered.
func (c *lineConn) answerSync() {
	c.t.Helper()
	c.expect(syncTag + " NOOP")
	c.send(syncTag + " OK NOOP completed.")
}

// testLogger fails the test if a password or SASL payload used by the
// tests ever shows up in the log: "secret" and "\x00alice\x00secret".
func testLogger(t testing.TB) *slog.Logger {
	return testlog.New(t, "secret", "AGFsaWNlAHNlY3JldA==")
}

// proxySession starts a fake backend and a proxy in front of it, and
// connects one TLS client through it, up to the greeting.
func proxySession(t testing.TB, mod func(*Options)) (env *proxyEnv, client, backend *lineConn) {
	t.Helper()
	b := startFakeBackend(t)
	env = startProxy(t, b.addr(), mod)
	client, backend = env.session(t, b)
	return env, client, backend
}
