package proxy

import (
	"encoding/base64"
	"regexp"
	"strings"
	"testing"

	"github.com/xapsproxy/xapsproxy/internal/dovecottest"
)

// Literal headers Dovecot reads where the proxy once did not: Dovecot starts
// a literal at any "{" outside a quoted string and answers "+ OK" as soon as
// it has read the "}", before it checks that the line ends there ("a NOOP
// {0}x" draws "+ OK", then "a BAD Missing LF after literal size"); it takes
// sizes of any number of digits, and "{}" as 0. A "+" the proxy did not
// expect was taken for the continuation request of a later AUTHENTICATE, and
// the client's next line went to Dovecot as a command. Now every such line
// is refused before it is forwarded, and a command that may draw a "+" only
// goes out when nothing else is in flight.

// plainIR is an AUTHENTICATE PLAIN initial response for alice with a wrong
// password.
var plainIR = base64.StdEncoding.EncodeToString([]byte("\x00alice\x00wrong"))

var oddHeaders = map[string]string{
	"text after it":  "{0}x",
	"space after it": "{0} ",
	"CR CR LF":       "{0}\r",
	"no digits":      "{}",
	"no digits, +":   "{+}",
}

// Before login: NOOP takes no arguments, and the AUTHENTICATE behind it is
// Dovecot's to answer; nobody logs in.
func TestDovecotOddLiteralHeaderBeforeLogin(t *testing.T) {
	t.Parallel()
	d, env := dovecotProxy(t, dovecottest.Options{}, func(o *Options) { o.MasterSeparator = "*" })
	for name, header := range oddHeaders {
		c := env.greeted(t)
		c.sendRaw("a NOOP " + header + "\r\n" +
			"c AUTHENTICATE PLAIN " + plainIR + "\r\n" +
			`c LOGIN "alice*` + d.MasterUser + `" ` + d.MasterPassword + "\r\n" +
			v2Line + "\r\n")
		c.expect("a BAD NOOP takes no arguments")
		if got := c.readUntilTagged("c"); !strings.HasPrefix(got, "c NO [AUTHENTICATIONFAILED]") {
			t.Fatalf("%s: AUTHENTICATE: %q", name, got)
		}
		c.expect(`c NO [AUTHENTICATIONFAILED] User names containing "*" are not accepted here`,
			"a2 BAD XAPPLEPUSHSERVICE is only valid after login")
	}
	if users := dovecotLogins(d); len(users) != 0 {
		t.Fatalf("Dovecot logged in %q", users)
	}
	if regs := env.registrations(); len(regs) != 0 {
		t.Fatalf("stored %+v", regs)
	}
}

// After login: the line is refused, and never reaches Dovecot.
func TestDovecotOddLiteralHeaderAfterLogin(t *testing.T) {
	t.Parallel()
	d, env := dovecotProxy(t, dovecottest.Options{}, nil)
	c := env.greeted(t)
	c.loginAs("alice", "alicepw")
	want := map[string]string{
		"{0}x": "literal header not at the end of the line", "{0} ": "literal header not at the end of the line",
		"{0}\r": "literal header not at the end of the line", "{}": "literal header without a size", "{+}": "literal header without a size",
	}
	for _, header := range oddHeaders {
		c.sendRaw("a SELECT " + header + "\r\nz COMPRESS DEFLATE\r\n")
		c.expect("a BAD "+want[header], "z NO COMPRESS is not available through this proxy")
	}
	// A size of many digits is a literal, read as Dovecot reads it.
	c.sendRaw("a SELECT {0000000000000000005}\r\n")
	c.expectPrefix("+ ")
	c.sendRaw("INBOX\r\n")
	if got := c.readUntilTagged("a"); !strings.HasPrefix(got, "a OK ") {
		t.Fatalf("SELECT: %q", got)
	}
	if strings.Contains(d.Log(), "Missing LF") {
		t.Fatalf("Dovecot saw an odd header:\n%s", d.Log())
	}
}

// The same attempt with an ID carrying x-originating-ip, from an address
// Dovecot trusts: it never gets there.
func TestDovecotOddLiteralHeaderCannotSpoofAddress(t *testing.T) {
	t.Parallel()
	d, env := dovecotProxy(t, dovecottest.Options{ExtraConfig: "login_trusted_networks = 127.0.0.1/32"}, nil)
	c := env.greeted(t)
	c.sendRaw("a NOOP {0}x\r\n" +
		"c AUTHENTICATE PLAIN " + plainIR + "\r\n" +
		"i ID (\"x-originating-ip\" \"6.6.5.5\" \"k\" {6+}\r\n" +
		"i NOOP )\r\n" +
		"l LOGIN alice alicepw\r\n")
	c.expect("a BAD NOOP takes no arguments")
	c.readUntilTagged("c")
	c.readUntilTagged("i")
	if got := c.readUntilTagged("l"); !strings.HasPrefix(got, "l OK ") {
		t.Fatalf("LOGIN: %q", got)
	}
	waitLogins(t, d, 1)
	if m := regexp.MustCompile(`Login: user=<alice>.*?rip=([0-9.]+)`).FindStringSubmatch(d.Log()); m == nil || m[1] != "127.0.0.1" {
		t.Errorf("Dovecot's login line %q: the client's x-originating-ip got through", m)
	}
}
