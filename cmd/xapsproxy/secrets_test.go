package main

import (
	"bytes"
	"errors"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// No secret reaches a log line at any level: full sessions through the
// proxy (LOGIN, AUTHENTICATE PLAIN with and without an initial response,
// the LOGIN mechanism, a failed login, a refused master-user login), the
// watchers' master logins, and pushes that fail and succeed, all logged at
// debug level. testlog fails the test if a password, the master password,
// a SASL payload or a full device token shows up in the log.
func TestNoSecretsInLogs(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	plainAlice, plainBob := b64("\x00alice\x00alicepw"), b64("\x00bob\x00bobpw")
	masterPlain := b64("alice\x00" + s.dovecot.MasterUser + "\x00" + s.dovecot.MasterPassword)
	s.secrets = []string{
		"bobpw", "wrongpw-1234", plainAlice, plainBob, masterPlain, b64("alicepw"), b64("bobpw"),
		v2Token, v1Token, strings.ToUpper(v2Token),
	}
	s.start()
	// The first push fails (and is logged as such), then it succeeds.
	s.apns.QueueResponse(v2Token, http.StatusInternalServerError, "InternalServerError")

	alice := s.connect()
	alice.command("a0 LOGIN alice wrongpw-1234")
	alice.command(`m0 LOGIN "alice*` + s.dovecot.MasterUser + `" ` + s.dovecot.MasterPassword)
	alice.command("m1 AUTHENTICATE PLAIN " + masterPlain)
	alice.loginAndRegister(strings.Replace(v2Line, v2Token, strings.ToUpper(v2Token), 1), "2")

	bob := s.connect()
	if r := bob.command("b1 AUTHENTICATE PLAIN " + plainBob); !strings.HasPrefix(r[len(r)-1], "b1 OK ") {
		t.Fatalf("AUTHENTICATE: %q", r)
	}
	if r := bob.command(v1Line); !strings.HasPrefix(r[len(r)-1], "tag1 OK ") {
		t.Fatalf("registration: %q", r)
	}

	for _, exchange := range [][]string{
		{"c1 AUTHENTICATE PLAIN", plainAlice},
		{"c2 AUTHENTICATE LOGIN", b64("bob"), b64("bobpw")},
	} {
		d := s.connect()
		tag, _, _ := strings.Cut(exchange[0], " ")
		d.send(exchange[0])
		for _, resp := range exchange[1:] {
			if l := d.line(); !strings.HasPrefix(l, "+") {
				t.Fatalf("%s: %q, want a continuation request", exchange[0], l)
			}
			d.send(resp)
		}
		if l := d.line(); !strings.HasPrefix(l, tag+" OK ") {
			t.Fatalf("%s: %q", exchange[0], l)
		}
	}

	s.waitWatching()
	s.deliver("for the log")
	s.apns.WaitRequests(t, 2, waitTimeout) // the failed one and its retry
}

// send writes one line.
func (d *device) send(line string) {
	d.t.Helper()
	if _, err := d.conn.Write([]byte(line + "\r\n")); err != nil {
		d.t.Fatal(err)
	}
}

// With auth = "captured" the proxy keeps users' passwords: none reaches a
// log line at debug level (logins by LOGIN, AUTHENTICATE PLAIN and the LOGIN
// mechanism, a failed login, the watchers' logins with the captured
// passwords, one refused after a password change), nor the database file
// in plain text.
func TestNoCapturedSecretsInLogs(t *testing.T) {
	t.Parallel()
	b := dovecotNoMaster(t)
	s := newCapturedStack(t, b, "alicepw", "bobpw", "wrongpw-1234", "bob-new-pw",
		b64("alicepw"), b64("bobpw"), b64("\x00alice\x00alicepw"), b64("bob-new-pw"))
	s.start()
	alice := s.connect()
	alice.command("a0 LOGIN alice wrongpw-1234")
	if r := alice.command("a1 AUTHENTICATE PLAIN " + b64("\x00alice\x00alicepw")); !strings.HasPrefix(r[len(r)-1], "a1 OK ") {
		t.Fatalf("AUTHENTICATE PLAIN: %q", r)
	}
	if r := alice.command(v2Line); !strings.HasPrefix(r[len(r)-1], "a2 OK ") {
		t.Fatalf("registration: %q", r)
	}
	bob := s.connect()
	bob.send("b1 AUTHENTICATE LOGIN")
	for _, resp := range []string{b64("bob"), b64("bobpw")} {
		if l := bob.line(); !strings.HasPrefix(l, "+") {
			t.Fatalf("AUTHENTICATE LOGIN: %q, want a continuation request", l)
		}
		bob.send(resp)
	}
	if l := bob.line(); !strings.HasPrefix(l, "b1 OK ") {
		t.Fatalf("AUTHENTICATE LOGIN: %q", l)
	}
	if r := bob.command(v1Line); !strings.HasPrefix(r[len(r)-1], "tag1 OK ") {
		t.Fatalf("registration: %q", r)
	}
	for user, pw := range map[string]string{"alice": "alicepw", "bob": "bobpw"} {
		if got := s.storedPassword(user); got != pw {
			t.Fatalf("%s's stored password: %q", user, got)
		}
	}
	s.waitWatching()
	// bob's password changes: his watcher's next login is refused.
	bob.conn.Close()
	b.setPassword(t, "bob", "bob-new-pw")
	s.tap.dropAll()
	waitUntil(t, "bob's refused password to be dropped", func() bool { return s.storedPassword("bob") == "" })
	s.deliver("for the log")
	s.apns.WaitRequests(t, 1, waitTimeout)
	s.stop()
	for _, suffix := range []string{"", "-wal", "-shm"} {
		data, err := os.ReadFile(s.cfg.Store.Path + suffix)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, pw := range []string{"alicepw", "bobpw"} {
			if bytes.Contains(data, []byte(pw)) {
				t.Errorf("%s holds a password in plain text", filepath.Base(s.cfg.Store.Path+suffix))
			}
		}
	}
}
