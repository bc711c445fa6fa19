package proxy

import (
	"crypto/tls"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/xapsproxy/xapsproxy/internal/dovecottest"
)

// Command smuggling, against a real Dovecot: a client pipelines lines behind
// a command that may or may not take continuation data (IDLE, AUTHENTICATE)
// or a literal, hoping the proxy frames the stream differently from Dovecot.
// Whatever it sends, the user the proxy registers devices for is the user
// Dovecot logged in, and nothing the proxy must intercept reaches Dovecot.

// readUntilTagged reads lines up to the tagged response of tag and returns
// that line.
func (c *lineConn) readUntilTagged(tag string) string {
	c.t.Helper()
	for {
		if l := c.readLine(); strings.HasPrefix(l, tag+" ") {
			return l
		}
	}
}

// register sends a registration and returns the tagged reply.
func (c *lineConn) register() string {
	c.t.Helper()
	c.send(v2Line)
	return c.readUntilTagged("a2")
}

// dovecotLogins returns the users Dovecot logged in, in order.
func dovecotLogins(d *dovecottest.Dovecot) []string {
	var users []string
	for _, m := range regexp.MustCompile(`imap-login: Info: Login: user=<([^>]*)>`).FindAllStringSubmatch(d.Log(), -1) {
		users = append(users, m[1])
	}
	return users
}

// waitLogins polls Dovecot's log until it shows n logins.
func waitLogins(t *testing.T, d *dovecottest.Dovecot, n int) []string {
	t.Helper()
	deadline := time.Now().Add(readTimeout)
	for {
		users := dovecotLogins(d)
		if len(users) >= n || time.Now().After(deadline) {
			return users
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Before login, over TLS: IDLE is not a command Dovecot takes before login,
// so the LOGIN behind it is a command, not IDLE's continuation. The proxy
// must not credit alice's login to the bob LOGIN that follows with the same
// tag.
func TestDovecotSmuggleLoginBehindIdle(t *testing.T) {
	t.Parallel()
	d, env := dovecotProxy(t, dovecottest.Options{}, nil)
	c := env.greeted(t)
	c.sendRaw("a IDLE\r\nx LOGIN alice alicepw\r\nx LOGIN bob nopw\r\n")
	c.expectPrefix("a BAD ")
	c.expectPrefix("x OK ")
	c.expect("x BAD Tag x is already in use by a command in progress")
	if got := c.register(); !strings.HasPrefix(got, "a2 OK") {
		t.Fatalf("registration: %q", got)
	}
	assertRegisteredFor(t, env, "alice")
	if users := waitLogins(t, d, 1); len(users) != 1 || users[0] != "alice" {
		t.Fatalf("Dovecot logged in %q", users)
	}
}

// After login: an AUTHENTICATE Dovecot refuses is followed by an APPEND
// whose literal is a LOGIN line. The literal is message data, and the
// session stays alice's.
func TestDovecotSmuggleLoginInLiteralBehindAuthenticate(t *testing.T) {
	t.Parallel()
	_, env := dovecotProxy(t, dovecottest.Options{}, nil)
	c := env.greeted(t)
	c.loginAs("alice", "alicepw")
	c.sendRaw("a AUTHENTICATE PLAIN AAAA\r\nx APPEND INBOX {14}\r\n")
	c.expectPrefix("a BAD ")
	c.expectPrefix("+ ")
	c.sendRaw("x LOGIN bob pw\r\n")
	if got := c.readUntilTagged("x"); !strings.HasPrefix(got, "x OK ") {
		t.Fatalf("APPEND: %q", got)
	}
	if got := c.register(); !strings.HasPrefix(got, "a2 OK") {
		t.Fatalf("registration: %q", got)
	}
	assertRegisteredFor(t, env, "alice")
	c.send("s SELECT INBOX")
	if got := c.readUntilTagged("s"); !strings.HasPrefix(got, "s OK ") {
		t.Fatalf("SELECT: %q", got)
	}
	c.send("f FETCH 1 BODY.PEEK[]")
	if l := c.readLine(); !strings.HasSuffix(l, "{14}") {
		t.Fatalf("FETCH: %q", l)
	}
	c.expect("x LOGIN bob pw)")
}

// On the STARTTLS listener nothing logs in before TLS, and a client's own
// x-originating-ip never reaches Dovecot, whatever is pipelined behind IDLE.
func TestDovecotSmuggleBeforeSTARTTLS(t *testing.T) {
	t.Parallel()
	d, env := dovecotProxy(t, dovecottest.Options{ExtraConfig: "login_trusted_networks = 127.0.0.1/32"}, nil)
	c := env.dialPlain(t)
	c.expectPrefix("* OK ")
	c.sendRaw("a IDLE\r\nx LOGIN alice alicepw\r\n")
	c.expectPrefix("a BAD ")
	c.expect("x " + privacyRequired)
	c.sendRaw("b IDLE\r\ni ID (\"x-originating-ip\" \"6.6.5.5\")\r\n")
	c.expectPrefix("b BAD ")
	c.readUntilTagged("i")
	c.sendRaw("c IDLE\r\nz XAPPLEPUSHSERVICE aps-version 2\r\n")
	c.expectPrefix("c BAD ")
	c.expect("z BAD XAPPLEPUSHSERVICE is only valid after login")
	c.send("n NOOP")
	c.readUntilTagged("n")
	if users := dovecotLogins(d); len(users) != 0 {
		t.Fatalf("Dovecot logged in %q before TLS", users)
	}
	tc := c.startTLS(t, env)
	tc.send("l LOGIN alice alicepw")
	tc.readUntilTagged("l")
	waitLogins(t, d, 1)
	if m := regexp.MustCompile(`Login: user=<alice>.*?rip=([0-9.]+)`).FindStringSubmatch(d.Log()); m == nil || m[1] != "127.0.0.1" {
		t.Fatalf("Dovecot's login line %q: the client's x-originating-ip got through", m)
	}
}

// dovecotProxy starts a real Dovecot and a proxy in front of it.
func dovecotProxy(t *testing.T, dopts dovecottest.Options, mod func(*Options)) (*dovecottest.Dovecot, *proxyEnv) {
	t.Helper()
	d := dovecottest.Start(t, dopts)
	return d, startProxy(t, d.IMAPAddr, mod)
}

// greeted connects a TLS client and reads the greeting.
func (e *proxyEnv) greeted(t *testing.T) *lineConn {
	t.Helper()
	c := e.dialTLS(t)
	c.expectPrefix("* OK ")
	return c
}

// loginAs logs in with LOGIN and checks that it worked.
func (c *lineConn) loginAs(user, password string) {
	c.t.Helper()
	c.send("l LOGIN " + user + " " + password)
	if got := c.readUntilTagged("l"); !strings.HasPrefix(got, "l OK ") {
		c.t.Fatalf("LOGIN %s: %q", user, got)
	}
}

// assertRegisteredFor checks that every stored registration is user's.
func assertRegisteredFor(t *testing.T, env *proxyEnv, user string) {
	t.Helper()
	regs := env.registrations()
	if len(regs) == 0 {
		t.Fatal("nothing registered")
	}
	for _, r := range regs {
		if r.User != user {
			t.Fatalf("registered for %q, want %q", r.User, user)
		}
	}
}

// startTLS upgrades a STARTTLS-listener connection.
func (c *lineConn) startTLS(t *testing.T, env *proxyEnv) *lineConn {
	t.Helper()
	c.send("st STARTTLS")
	c.expect("st OK Begin TLS negotiation now")
	tc := tls.Client(c.conn, &tls.Config{RootCAs: env.ca.Pool(), ServerName: "127.0.0.1"})
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	return newLineConn(t, tc)
}
