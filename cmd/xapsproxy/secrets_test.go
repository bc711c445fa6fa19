package main

import (
	"encoding/base64"
	"net/http"
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
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
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
