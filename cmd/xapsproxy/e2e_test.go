package main

// End-to-end tests: the whole binary's wiring in front of a real Dovecot,
// a device that speaks like iPhone Mail over TLS, mail delivered over LMTP
// as an MTA would, and a fake APNs (HTTP/2, TLS client certificate required)
// that checks every request.

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/xapsproxy/xapsproxy/config"
	"github.com/xapsproxy/xapsproxy/internal/apnstest"
	"github.com/xapsproxy/xapsproxy/internal/dovecottest"
	"github.com/xapsproxy/xapsproxy/internal/testlog"
	"github.com/xapsproxy/xapsproxy/internal/testpki"
)

// The registrations of PROTOCOL.md, verbatim.
const (
	topic     = "com.apple.mail.XServer.d19011df-561b-444d-ac59-09459e74a5e6"
	v2Token   = "2918390218931890821908309283098109381029309829018310983092892829"
	v2Account = "0715A26B-CA09-4730-A419-793000CA982E"
	v2Line    = "a2 XAPPLEPUSHSERVICE aps-version 2 aps-account-id " + v2Account + " aps-device-token " + v2Token + " aps-subtopic com.apple.mobilemail mailboxes (INBOX Notes)"
	v1Token   = "a66216ad1683d48b9933cdcc3b98a833ee1a968143f41ea494187da54715da66"
	v1Account = "E8CD34AD-98D3-4489-A6BB-86B1D082FECE"
	v1Line    = `tag1 XAPPLEPUSHSERVICE "aps-version" "1" "aps-account-id" "` + v1Account + `" "aps-device-token" "` + v1Token + `" "aps-subtopic" "com.apple.mobilemail"`

	waitTimeout = 15 * time.Second
	// quietWindow is how long the tests watch for an unwanted extra push:
	// well past Dovecot's 0.5 s notification delay and a watcher round trip.
	quietWindow = 1500 * time.Millisecond
)

// stack is Dovecot, a fake APNs and the configuration that joins them to
// xapsproxy; start runs xapsproxy itself, and may be called again after stop.
type stack struct {
	t       *testing.T
	dovecot *dovecottest.Dovecot
	apns    *apnstest.Server
	ca      *testpki.CA
	cfg     *config.Config
	cfgPath string

	app    *app
	stop   func()
	reload chan os.Signal // as SIGHUP
	// secrets, besides alice's and the master password, that must never
	// be logged.
	secrets []string
}

func newStack(t *testing.T) *stack {
	t.Helper()
	return newStackWith(t, dovecottest.Options{}, "")
}

// newStackWith is newStack with Dovecot started with dopts and extra
// appended to xapsproxy's configuration.
func newStackWith(t *testing.T, dopts dovecottest.Options, extra string) *stack {
	t.Helper()
	return newStackStore(t, dopts, `path = "xapsproxy.db"`, extra)
}

// newStackStore is newStackWith with storeKeys as the [store] section.
func newStackStore(t *testing.T, dopts dovecottest.Options, storeKeys, extra string) *stack {
	t.Helper()
	d := dovecottest.Start(t, dopts)
	ca := testpki.NewCA(t)
	dir := t.TempDir()
	proxyCert, proxyKey := testpki.WritePEM(t, dir, "proxy", ca.ServerCert(t, "127.0.0.1", "localhost"))
	apnsCert := testpki.WriteCombinedPEM(t, dir, "apns", ca.ClientCert(t, topic))
	fake := apnstest.Start(t, ca, topic)
	doc := fmt.Sprintf(`
[proxy]
listen_tls = "127.0.0.1:0"
listen_starttls = "127.0.0.1:0"
cert_file = %q
key_file = %q

[backend]
address = %q

[watch]
master_user = %q
master_password = %q

[apns]
certificate_file = %q
endpoint = %q
ca_file = %q

[store]
%s

[admin]
listen = "127.0.0.1:0"
`, proxyCert, proxyKey, d.IMAPAddr, d.MasterUser, d.MasterPassword, apnsCert, fake.URL, ca.WriteCA(t, dir), storeKeys) + extra
	path := filepath.Join(dir, "xapsproxy.toml")
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	s := &stack{t: t, dovecot: d, apns: fake, ca: ca, cfg: cfg, cfgPath: path}
	t.Cleanup(func() {
		if s.stop != nil {
			s.stop()
		}
	})
	return s
}

// start runs xapsproxy in this process, as `xapsproxy serve` does.
func (s *stack) start() {
	s.t.Helper()
	s.startLogging(testlog.New(s.t, append([]string{"alicepw", s.dovecot.MasterPassword}, s.secrets...)...))
}

// startLogging is start with its own logger.
func (s *stack) startLogging(log *slog.Logger) {
	s.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	a, err := newApp(ctx, s.cfg, log, nil)
	if err != nil {
		cancel()
		s.t.Fatal(err)
	}
	s.reload = make(chan os.Signal, 1)
	a.reload = s.reload
	done := make(chan error, 1)
	go func() { done <- a.run(ctx) }()
	var once sync.Once
	s.app = a
	s.stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					s.t.Errorf("run: %v", err)
				}
			case <-time.After(waitTimeout):
				s.t.Error("xapsproxy did not stop")
			}
		})
	}
}

// device is a client that behaves like iPhone Mail: TLS to the proxy, LOGIN,
// then XAPPLEPUSHSERVICE.
type device struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

func (s *stack) connect() *device {
	s.t.Helper()
	c, err := tls.Dial("tcp", s.app.tlsLn.Addr().String(), &tls.Config{RootCAs: s.ca.Pool(), ServerName: "localhost"})
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() { c.Close() })
	d := &device{t: s.t, conn: c, r: bufio.NewReader(c)}
	if g := d.line(); !strings.HasPrefix(g, "* OK ") {
		s.t.Fatalf("greeting %q", g)
	}
	return d
}

func (d *device) line() string {
	d.t.Helper()
	d.conn.SetReadDeadline(time.Now().Add(waitTimeout))
	l, err := d.r.ReadString('\n')
	if err != nil {
		d.t.Fatalf("read: %v", err)
	}
	return strings.TrimSuffix(l, "\r\n")
}

// command sends a line and returns the replies up to and including the
// tagged one.
func (d *device) command(line string) []string {
	d.t.Helper()
	tag, _, _ := strings.Cut(line, " ")
	if _, err := fmt.Fprintf(d.conn, "%s\r\n", line); err != nil {
		d.t.Fatal(err)
	}
	var out []string
	for {
		l := d.line()
		out = append(out, l)
		if strings.HasPrefix(l, tag+" ") {
			return out
		}
	}
}

// loginAndRegister logs in as alice and registers with line, checking every
// reply the way iPhone Mail depends on it.
func (d *device) loginAndRegister(line, version string) {
	d.t.Helper()
	d.loginAndRegisterWith("alicepw", line, version)
}

// loginAndRegisterWith is loginAndRegister with alice's password.
func (d *device) loginAndRegisterWith(password, line, version string) {
	d.t.Helper()
	d.loginAsAndRegister("alice", password, line, version)
}

// loginAndRegisterAs is loginAndRegisterWith for another spelling of
// alice's name.
func (d *device) loginAsAndRegister(user, password, line, version string) {
	d.t.Helper()
	reply := d.command("a1 LOGIN " + user + " " + password)
	last := reply[len(reply)-1]
	if !strings.HasPrefix(last, "a1 OK [CAPABILITY ") || !strings.Contains(last, " XAPPLEPUSHSERVICE") {
		d.t.Fatalf("LOGIN reply %q does not advertise XAPPLEPUSHSERVICE", last)
	}
	reply = d.command("c1 CAPABILITY")
	if !strings.HasPrefix(reply[0], "* CAPABILITY ") || !strings.Contains(reply[0], " XAPPLEPUSHSERVICE") {
		d.t.Fatalf("CAPABILITY reply %q", reply)
	}
	tag, _, _ := strings.Cut(line, " ")
	reply = d.command(line)
	// As Apple's server answers: the mailboxes, then version and topic.
	want := []string{`* XAPPLEPUSHSERVICE "mailbox" "INBOX"`}
	if version == "2" {
		want = append(want, `* XAPPLEPUSHSERVICE "mailbox" "Notes"`)
	}
	want = append(want,
		`* XAPPLEPUSHSERVICE aps-version "`+version+`" aps-topic "`+topic+`"`,
		tag+" OK XAPPLEPUSHSERVICE completed.")
	if strings.Join(reply, "\n") != strings.Join(want, "\n") {
		d.t.Fatalf("XAPPLEPUSHSERVICE reply %q, want %q", reply, want)
	}
}

// waitWatching waits until the watcher of alice has taken its INBOX
// baseline, i.e. mail from now on is news.
func (s *stack) waitWatching() {
	s.t.Helper()
	waitUntil(s.t, "the watcher's INBOX baseline", func() bool {
		_, err := s.app.store.MailboxState(context.Background(), "alice", "INBOX")
		return err == nil
	})
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond) // polling interval, not synchronisation
	}
}

func (s *stack) deliver(subject string) {
	s.t.Helper()
	msg := "From: bob@example.com\r\nTo: alice@example.com\r\nSubject: " + subject + "\r\n\r\nHello.\r\n"
	s.dovecot.Deliver(s.t, "alice@example.com", []byte(msg))
}

// expectPushes waits for the fake APNs to hold n requests in all, checks the
// last one, and then that no further request comes within quietWindow.
func (s *stack) expectPushes(n int, token, account string) apnstest.Request {
	s.t.Helper()
	reqs := s.apns.WaitRequests(s.t, n, waitTimeout)
	r := reqs[n-1]
	if r.Token != token || r.AccountID != account || r.Topic != topic || r.PushType != "background" {
		s.t.Errorf("push %d: token %s account %s topic %s type %s", n, r.Token, r.AccountID, r.Topic, r.PushType)
	}
	if d := time.Until(r.Expiration) - 24*time.Hour; d > time.Minute || d < -time.Minute {
		s.t.Errorf("apns-expiration %v is not now+24h", r.Expiration)
	}
	deadline := time.Now().Add(quietWindow)
	for time.Now().Before(deadline) {
		if got := len(s.apns.Requests()); got != n {
			s.t.Fatalf("%d pushes, want exactly %d", got, n)
		}
		time.Sleep(50 * time.Millisecond) // observing that nothing more happens
	}
	return r
}

func TestEndToEndVersion2(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	s.start()
	s.connect().loginAndRegister(v2Line, "2")
	s.waitWatching()
	s.deliver("first")
	r := s.expectPushes(1, v2Token, v2Account)
	// m names INBOX, where the mail went: the MD5 of "INBOX".
	if string(r.Body) != `{"aps":{"account-id":"`+v2Account+`","m":["7e33429f656f1e6e9d79b29c3f82c57e"]}}` {
		t.Errorf("body %s", r.Body)
	}
	// Dovecot logged the watcher in as alice through the master user.
	if log := s.dovecot.Log(); !strings.Contains(log, "alice") {
		t.Errorf("Dovecot's log shows no session of alice:\n%s", log)
	}
	s.deliver("second")
	s.expectPushes(2, v2Token, v2Account)
}

func TestEndToEndVersion1(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	s.start()
	s.connect().loginAndRegister(v1Line, "1")
	s.waitWatching()
	s.deliver("v1")
	s.expectPushes(1, v1Token, v1Account)
}

// A registration survives a restart, and mail that arrives while the proxy
// is down is pushed once it is back.
func TestEndToEndRestart(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	s.start()
	s.connect().loginAndRegister(v2Line, "2")
	s.waitWatching()
	s.stop()

	s.deliver("while down")
	s.start()
	s.expectPushes(1, v2Token, v2Account)
	s.deliver("after restart")
	s.expectPushes(2, v2Token, v2Account)
}

// APNs answering 410 Unregistered removes the registration.
func TestEndToEndUnregistered(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	s.apns.SetResponse(v2Token, 410, "Unregistered")
	s.start()
	s.connect().loginAndRegister(v2Line, "2")
	s.waitWatching()
	s.deliver("to a gone device")
	s.apns.WaitRequests(t, 1, waitTimeout)
	waitUntil(t, "the registration to be deleted", func() bool {
		regs, err := s.app.store.Registrations(context.Background(), "alice")
		return err == nil && len(regs) == 0
	})
}

// APNs failing with 500 is retried and never takes the process down.
func TestEndToEndServerError(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	s.apns.QueueResponse(v2Token, 500, "InternalServerError")
	s.start()
	s.connect().loginAndRegister(v2Line, "2")
	s.waitWatching()
	s.deliver("during an APNs outage")
	reqs := s.apns.WaitRequests(t, 2, waitTimeout) // the 500, then the retry
	if reqs[1].Token != v2Token {
		t.Errorf("retry went to %s", reqs[1].Token)
	}
	waitUntil(t, "the retry to be recorded as delivered", func() bool {
		regs, err := s.app.store.Registrations(context.Background(), "alice")
		return err == nil && len(regs) == 1 && regs[0].LastPushResult == "200"
	})
	// Still serving: a new session logs in and renews the registration.
	before := time.Now()
	s.connect().loginAndRegister(v2Line, "2")
	regs, err := s.app.store.Registrations(context.Background(), "alice")
	if err != nil || len(regs) != 1 || regs[0].Renewed.Before(before) {
		t.Fatalf("registrations %+v, %v", regs, err)
	}
}

// The watcher reconnects after a backend outage and pushes what arrived.
func TestEndToEndBackendRestart(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	s.start()
	s.connect().loginAndRegister(v2Line, "2")
	s.waitWatching()
	s.dovecot.Stop(t)
	s.dovecot.Restart(t)
	s.deliver("after the outage")
	s.expectPushes(1, v2Token, v2Account)
}

// SIGHUP makes new connections get the renewed certificate.
func TestEndToEndCertificateReload(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	s.start()
	before := s.connect()
	renewedCA := testpki.NewCA(t)
	certFile, keyFile := testpki.WritePEM(t, t.TempDir(), "renewed", renewedCA.ServerCert(t, "localhost"))
	for _, f := range [][2]string{{certFile, s.cfg.Proxy.CertFile}, {keyFile, s.cfg.Proxy.KeyFile}} {
		data, err := os.ReadFile(f[0])
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f[1], data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	s.reload <- syscall.SIGHUP
	waitUntil(t, "the renewed certificate", func() bool {
		c, err := tls.Dial("tcp", s.app.tlsLn.Addr().String(), &tls.Config{RootCAs: renewedCA.Pool(), ServerName: "localhost"})
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	before.loginAndRegister(v2Line, "2") // a session from before goes on
}
