package proxy

import (
	"crypto/hmac"
	"crypto/md5"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/xapsproxy/xapsproxy/config"
	"github.com/xapsproxy/xapsproxy/internal/dovecottest"
	"github.com/xapsproxy/xapsproxy/internal/testlog"
)

// captures records the calls of Options.Captured.
type captures struct {
	mu    sync.Mutex
	calls []string // "user:password"
}

func (c *captures) captured(user, password string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls = append(c.calls, user+":"+password)
}

func (c *captures) all() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.calls...)
}

// The proxy hands Captured the password of every login the real Dovecot
// accepts, through each way a client can send it, with the user named as
// the registration names it; never of a failed, cancelled or master-user
// login, nor of CRAM-MD5, which sends no password.
func TestDovecotCapturedPasswords(t *testing.T) {
	t.Parallel()
	caps := &captures{}
	d, env := dovecotProxy(t, dovecottest.Options{
		Users:       map[string]string{"alice": "alice pw", "bob": "bobpw", "carol": "carolpw"},
		ExtraConfig: "auth_mechanisms = plain login cram-md5",
	}, func(o *Options) {
		o.Backend.UsernameFormat = "%Ln" // as the template's auth_username_format
		o.MasterSeparator, o.AllowMasterLogins = "*", true
		o.Captured = caps.captured
		o.Logger = testlog.New(t, "alice pw", "bobpw", "carolpw", "masterpw", "wrongpw", b64("\x00bob\x00bobpw"))
	})
	cramMD5 := func(c *lineConn, user, password string) {
		c.send("l AUTHENTICATE CRAM-MD5")
		challenge, ok := strings.CutPrefix(c.readLine(), "+ ")
		if !ok {
			t.Fatal("no challenge")
		}
		raw, _ := base64.StdEncoding.DecodeString(challenge)
		mac := hmac.New(md5.New, []byte(password))
		mac.Write(raw)
		c.send(b64(user + " " + hex.EncodeToString(mac.Sum(nil))))
	}
	tests := []struct {
		name  string
		login func(c *lineConn) // ends with the answer to tag "l" read
		ok    bool
		want  string // "user:password" captured, "" for none
	}{
		{"LOGIN", func(c *lineConn) { c.send(`l LOGIN Alice@Example.com "alice pw"`) }, true, "alice:alice pw"},
		{"LOGIN with literals", func(c *lineConn) {
			c.send("l LOGIN {5}")
			c.expectPrefix("+ ")
			c.send("carol {7}")
			c.expectPrefix("+ ")
			c.send("carolpw")
		}, true, "carol:carolpw"},
		{"LOGIN wrong password", func(c *lineConn) { c.send("l LOGIN bob wrongpw") }, false, ""},
		{"PLAIN initial response", func(c *lineConn) { c.send("l AUTHENTICATE PLAIN " + b64("\x00bob\x00bobpw")) }, true, "bob:bobpw"},
		{"PLAIN after +, authzid = authcid", func(c *lineConn) {
			c.send("l AUTHENTICATE PLAIN")
			c.expectPrefix("+")
			c.send(b64("bob\x00bob\x00bobpw"))
		}, true, "bob:bobpw"},
		{"PLAIN wrong password", func(c *lineConn) { c.send("l AUTHENTICATE PLAIN " + b64("\x00bob\x00wrongpw")) }, false, ""},
		{"LOGIN mechanism", func(c *lineConn) {
			c.send("l AUTHENTICATE LOGIN")
			c.expectPrefix("+ ")
			c.send(b64("bob"))
			c.expectPrefix("+ ")
			c.send(b64("bobpw"))
		}, true, "bob:bobpw"},
		{"LOGIN mechanism, initial response", func(c *lineConn) {
			c.send("l AUTHENTICATE LOGIN " + b64("BOB"))
			c.expectPrefix("+ ")
			c.send(b64("bobpw"))
		}, true, "bob:bobpw"},
		{"LOGIN mechanism cancelled", func(c *lineConn) {
			c.send("l AUTHENTICATE LOGIN " + b64("bob"))
			c.expectPrefix("+ ")
			c.send("*")
		}, false, ""},
		{"CRAM-MD5", func(c *lineConn) { cramMD5(c, "bob", "bobpw") }, true, ""},
		{"master LOGIN", func(c *lineConn) { c.send(`l LOGIN "alice*` + d.MasterUser + `" ` + d.MasterPassword) }, true, ""},
		{"master PLAIN", func(c *lineConn) {
			c.send("l AUTHENTICATE PLAIN " + b64("alice\x00"+d.MasterUser+"\x00"+d.MasterPassword))
		}, true, ""},
	}
	for _, tt := range tests {
		before := len(caps.all())
		c := env.greeted(t)
		tt.login(c)
		if got := c.readUntilTagged("l"); strings.HasPrefix(got, "l OK ") != tt.ok {
			t.Fatalf("%s: %q", tt.name, got)
		}
		// Captured runs before the backend reader forwards the next
		// response: once NOOP is answered, it has been called.
		c.send("n NOOP")
		c.readUntilTagged("n")
		got := caps.all()[before:]
		want := []string{}
		if tt.want != "" {
			want = []string{tt.want}
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s: captured %q, want %q", tt.name, got, want)
		}
	}
}

// Without Captured nothing is kept: the same logins work as before.
func TestDovecotNothingCapturedByDefault(t *testing.T) {
	t.Parallel()
	_, env := dovecotProxy(t, dovecottest.Options{}, func(o *Options) {
		o.Backend = config.Backend{Address: o.Backend.Address, UsernameFormat: "%Ln"}
	})
	c := env.greeted(t)
	c.send("l AUTHENTICATE PLAIN " + b64("\x00alice\x00alicepw"))
	if got := c.readUntilTagged("l"); !strings.HasPrefix(got, "l OK ") {
		t.Fatalf("AUTHENTICATE: %q", got)
	}
}
