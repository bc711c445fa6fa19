package main

// End-to-end tests of watch.auth = "captured": the whole binary in front of
// IMAP servers without master users (Cyrus, and Dovecot with none
// configured), the watcher logging in with the password alice gave the
// proxy, and what happens when she changes it.

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xapsproxy/xapsproxy/config"
	"github.com/xapsproxy/xapsproxy/credential"
	"github.com/xapsproxy/xapsproxy/internal/apnstest"
	"github.com/xapsproxy/xapsproxy/internal/cyrusrun"
	"github.com/xapsproxy/xapsproxy/internal/dovecottest"
	"github.com/xapsproxy/xapsproxy/internal/testlog"
	"github.com/xapsproxy/xapsproxy/internal/testpki"
	"github.com/xapsproxy/xapsproxy/store"
)

// refusedLine is what the credential store logs when the backend refuses
// a captured password.
const refusedLine = "captured password refused by the backend; waiting for the user's next login"

// imapBackend is a real IMAP server without a master user.
type imapBackend struct {
	addr        string
	deliver     func(t *testing.T, rcpt string, msg []byte)
	setPassword func(t *testing.T, user, password string)
}

func dovecotNoMaster(t *testing.T) imapBackend {
	d := dovecottest.Start(t, dovecottest.Options{NoMasterUser: true})
	return imapBackend{
		addr:        d.IMAPAddr,
		deliver:     func(t *testing.T, rcpt string, msg []byte) { d.Deliver(t, rcpt, msg) },
		setPassword: func(t *testing.T, user, password string) { d.SetPassword(t, user, password) },
	}
}

func cyrus(t *testing.T) imapBackend {
	c := cyrusrun.StartTest(t, cyrusrun.Options{})
	return imapBackend{
		addr: c.IMAPAddr,
		deliver: func(t *testing.T, rcpt string, msg []byte) {
			t.Helper()
			if err := c.Deliver(rcpt, msg); err != nil {
				t.Fatal(err)
			}
		},
		setPassword: func(t *testing.T, user, password string) {
			t.Helper()
			if err := c.SetPassword(user, password); err != nil {
				t.Fatal(err)
			}
		},
	}
}

// capturedStack is xapsproxy with auth = "captured" in front of backend,
// through a loginTap, with a fake APNs.
type capturedStack struct {
	*stack
	backend imapBackend
	tap     *loginTap
	logs    *lockedBuffer // every log line, for the assertions on them
	secrets []string
}

func newCapturedStack(t *testing.T, b imapBackend, secrets ...string) *capturedStack {
	t.Helper()
	tap := startTap(t, b.addr)
	ca := testpki.NewCA(t)
	dir := t.TempDir()
	proxyCert, proxyKey := testpki.WritePEM(t, dir, "proxy", ca.ServerCert(t, "127.0.0.1", "localhost"))
	apnsCert := testpki.WriteCombinedPEM(t, dir, "apns", ca.ClientCert(t, topic))
	fake := apnstest.Start(t, ca, topic)
	// No secret_key_file: it is made as secret.key beside the store.
	doc := fmt.Sprintf(`
[proxy]
listen_tls = "127.0.0.1:0"
cert_file = %q
key_file = %q

[backend]
address = %q

[watch]
auth = "captured"

[apns]
certificate_file = %q
endpoint = %q
ca_file = %q

[store]
path = "xapsproxy.db"

[admin]
listen = ""
`, proxyCert, proxyKey, tap.addr(), apnsCert, fake.URL, ca.WriteCA(t, dir))
	path := filepath.Join(dir, "xapsproxy.toml")
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	s := &capturedStack{
		stack:   &stack{t: t, apns: fake, ca: ca, cfg: cfg, cfgPath: path},
		backend: b, tap: tap, logs: &lockedBuffer{}, secrets: secrets,
	}
	t.Cleanup(func() {
		if s.stop != nil {
			s.stop()
		}
	})
	return s
}

// start runs xapsproxy in this process, logging at debug level into the
// test log (failing the test if a secret shows up) and into s.logs.
func (s *capturedStack) start() {
	s.t.Helper()
	rec := slog.NewTextHandler(s.logs, &slog.HandlerOptions{Level: slog.LevelDebug})
	s.startLogging(slog.New(slog.NewMultiHandler(testlog.New(s.t, s.secrets...).Handler(), rec)))
}

func (s *capturedStack) deliver(subject string) {
	s.t.Helper()
	s.backend.deliver(s.t, "alice@example.com", []byte("From: bob@example.com\r\nTo: alice@example.com\r\nSubject: "+subject+"\r\n\r\nHello.\r\n"))
}

// storedPassword opens alice's stored credential with the key file, as the
// watcher would; "" when there is none.
func (s *capturedStack) storedPassword(user string) string {
	s.t.Helper()
	key, err := credential.LoadKey(s.cfg.Watch.SecretKeyFile)
	if err != nil {
		s.t.Fatal(err)
	}
	_, pw, err := credential.New(credential.Options{Key: key, Store: s.app.store}).For(context.Background(), user)
	if err != nil {
		return ""
	}
	return pw
}

// lockedBuffer is a bytes.Buffer safe for concurrent use.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestCapturedCyrus(t *testing.T) {
	t.Parallel()
	testCaptured(t, cyrus(t), false)
}

func TestCapturedDovecotWithoutMasterUser(t *testing.T) {
	t.Parallel()
	testCaptured(t, dovecotNoMaster(t), true)
}

// testCaptured: alice logs in through the proxy and registers; the watcher
// logs in as alice with her password and mail is pushed (after a restart
// of xapsproxy too, with restart: the sealed password is in the store).
// Then her password changes on the server: the watcher's next login is
// refused once, the stored password is dropped, and nothing retries; her
// phone logs in with the new password, which is stored, and the watcher
// watches again.
func testCaptured(t *testing.T, b imapBackend, restart bool) {
	const oldPW, newPW = "alicepw", "alice-new-pw"
	s := newCapturedStack(t, b, oldPW, newPW, b64(oldPW), b64(newPW), b64("\x00alice\x00"+newPW))
	s.start()
	if _, err := os.Stat(s.cfg.Watch.SecretKeyFile); err != nil || filepath.Base(s.cfg.Watch.SecretKeyFile) != "secret.key" {
		t.Fatalf("key file %s: %v", s.cfg.Watch.SecretKeyFile, err)
	}
	phone := s.connect()
	phone.loginAndRegisterWith(oldPW, v2Line, "2")
	if got := s.storedPassword("alice"); got != oldPW {
		t.Fatalf("stored password %q, want alice's", got)
	}
	s.waitWatching()
	s.deliver("first")
	s.expectPushes(1, v2Token, v2Account)
	pushes := 1

	if restart {
		// Nobody logs in after the restart: the watcher uses the stored
		// password.
		s.stop()
		s.deliver("while down")
		logins := s.tap.loginCount()
		s.stop, s.app = nil, nil
		s.start()
		pushes++
		s.expectPushes(pushes, v2Token, v2Account)
		if n := s.tap.loginCount() - logins; n != 1 {
			t.Errorf("%d logins after the restart, want the watcher's one", n)
		}
	}

	// The password changes on the server; the watcher's connection drops
	// (as at a server restart) and it logs in again with the old one.
	phone.conn.Close()
	s.backend.setPassword(t, "alice", newPW)
	logins, dials := s.tap.loginCount(), s.tap.dialCount()
	s.tap.dropAll()
	waitUntil(t, "the refused password to be dropped", func() bool {
		_, err := s.app.store.Credential(context.Background(), "alice")
		return errors.Is(err, store.ErrNotFound)
	})
	refusedAt := time.Now()
	// Logged once the store has dropped it.
	waitUntil(t, "the log line "+refusedLine, func() bool { return strings.Contains(s.logs.String(), refusedLine) })
	// No retry storm: the one refused login, and nothing more.
	for time.Since(refusedAt) < 2*quietWindow {
		time.Sleep(50 * time.Millisecond) // observing that nothing more happens
	}
	if n, d := s.tap.loginCount()-logins, s.tap.dialCount()-dials; n != 1 || d > 2 {
		t.Errorf("after the password change: %d logins and %d connections in %v, want 1 login", n, d, time.Since(refusedAt).Round(time.Millisecond))
	} else {
		t.Logf("after the password change: %d login, %d connections in %v", n, d, time.Since(refusedAt).Round(time.Millisecond))
	}

	// The phone logs in with the new password (AUTHENTICATE PLAIN this
	// time) and registers again, as iOS does every session.
	phone = s.connect()
	if r := phone.command("p1 AUTHENTICATE PLAIN " + b64("\x00alice\x00"+newPW)); !strings.HasPrefix(r[len(r)-1], "p1 OK ") {
		t.Fatalf("AUTHENTICATE with the new password: %q", r)
	}
	if r := phone.command(v2Line); !strings.HasPrefix(r[len(r)-1], "a2 OK ") {
		t.Fatalf("registration: %q", r)
	}
	if got := s.storedPassword("alice"); got != newPW {
		t.Fatalf("stored password %q after the new login, want the new one", got)
	}

	// The store never holds a password in plain text.
	for _, suffix := range []string{"", "-wal"} {
		data, err := os.ReadFile(s.cfg.Store.Path + suffix)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(data, []byte(oldPW)) || bytes.Contains(data, []byte(newPW)) {
			t.Errorf("%s holds a password in plain text", filepath.Base(s.cfg.Store.Path+suffix))
		}
	}

	// The watcher, waiting for a password since the refusal, logs in with
	// the new one at once.
	s.deliver("after the new login")
	pushes++
	s.expectPushes(pushes, v2Token, v2Account)
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
