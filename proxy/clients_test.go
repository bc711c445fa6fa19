package proxy

// The proxy is invisible to real third-party IMAP clients: each test runs
// the same client program against the real Dovecot directly (plain IMAP: the
// test instance has ssl = no) and through the proxy (implicit TLS or
// STARTTLS, verified against the test CA), and compares what the client
// printed or stored.
//
// A client program that is not installed skips its test, or fails it when
// XAPSPROXY_TEST_DOVECOT=required (as in CI, which installs them).

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/xapsproxy/xapsproxy/internal/dovecottest"
	"github.com/xapsproxy/xapsproxy/internal/imapwire"
	"github.com/xapsproxy/xapsproxy/internal/testlog"
)

const clientTimeout = 30 * time.Second // one run of an external client

// clientBinary finds a client program, or skips (fails when
// XAPSPROXY_TEST_DOVECOT=required) naming the Debian package that has it.
func clientBinary(t *testing.T, name, debianPackage string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	msg := fmt.Sprintf("%s not found; install it with: apt-get install %s", name, debianPackage)
	if os.Getenv("XAPSPROXY_TEST_DOVECOT") == "required" {
		t.Fatal(msg + " (XAPSPROXY_TEST_DOVECOT=required)")
	}
	t.Skip(msg)
	return ""
}

// runClient runs a client program with a timeout and returns its standard
// output. A failure reports its standard error and output.
func runClient(t *testing.T, env []string, name string, args ...string) []byte {
	t.Helper()
	out, stderr, err := tryClient(t, env, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\nstderr:\n%s\nstdout (%d bytes):\n%s", name, strings.Join(args, " "), err, stderr, len(out), abbrev(out))
	}
	return out
}

// tryClient runs a client program with a timeout and returns its standard
// output, standard error and error.
func tryClient(t *testing.T, env []string, name string, args ...string) (stdout, stderr []byte, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), clientTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	cmd.WaitDelay = time.Second
	err = cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("%w (%v)", err, ctx.Err())
	}
	return out.Bytes(), errOut.Bytes(), err
}

// abbrev shortens output for a failure message.
func abbrev(b []byte) string {
	if len(b) > 2000 {
		return fmt.Sprintf("%s\n... (%d bytes more)", b[:2000], len(b)-2000)
	}
	return string(b)
}

// clientProxy starts the proxy in front of d, with a logger that fails the
// test if a user's password ever shows up in its log, as it is or as the
// clients send it in AUTHENTICATE PLAIN and LOGIN.
func clientProxy(t *testing.T, d *dovecottest.Dovecot, mod func(*Options)) *proxyEnv {
	t.Helper()
	var secrets []string
	for _, user := range []string{"alice", "bob", "carol", "dave"} {
		if pw := d.Password(user); pw != "" {
			secrets = append(secrets, pw, base64.StdEncoding.EncodeToString([]byte("\x00"+user+"\x00"+pw)),
				base64.StdEncoding.EncodeToString([]byte(pw)))
		}
	}
	return startProxy(t, d.IMAPAddr, func(o *Options) {
		o.Logger = testlog.New(t, secrets...)
		if mod != nil {
			mod(o)
		}
	})
}

// testMessage is a message the client tests store.
type testMessage struct {
	name string
	data []byte // CRLF line endings throughout
}

// clientMessages are messages that a client must get back byte for byte:
// one whose body looks like IMAP protocol, 8-bit ones, lines starting with
// dots (LMTP dot-stuffing) and one of about 2 MB.
func clientMessages() []testMessage {
	rng := rand.New(rand.NewPCG(3, 4))
	var big bytes.Buffer
	big.WriteString("From: Big <big@example.com>\r\nTo: alice@example.com\r\nSubject: big\r\n\r\n")
	line := make([]byte, 76)
	for big.Len() < 2<<20 {
		for i := range line {
			line[i] = 'a' + byte(rng.IntN(26))
		}
		big.Write(line)
		big.WriteString("\r\n")
	}
	return []testMessage{
		{"plain", []byte("From: Bob <bob@example.com>\r\nTo: alice@example.com\r\nSubject: hello\r\nMessage-ID: <hello@example.com>\r\n\r\nHello Alice.\r\n")},
		{"protocol-looking", []byte("From: Mallory <m@example.com>\r\nTo: alice@example.com\r\nSubject: tricky\r\n\r\n" +
			"* CAPABILITY IMAP4rev1\r\n* BYE not really\r\nA001 OK [CAPABILITY IMAP4rev1 XAPPLEPUSHSERVICE] fake\r\n" +
			"+ go ahead\r\n{5}\r\nxaps0 STARTTLS\r\n* 1 FETCH (BODY[] {3}\r\n)\r\n")},
		{"8-bit", []byte("From: =?utf-8?q?J=C3=BCrgen?= <j@example.com>\r\nTo: alice@example.com\r\nSubject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n" +
			"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" +
			"Grüße aus Köln, été ©, 日本語, \xff\xfe not UTF-8 at all\r\n")},
		{"dots", []byte("From: Dot <dot@example.com>\r\nTo: alice@example.com\r\nSubject: dots\r\n\r\n.\r\n..\r\n. leading dot\r\nlast line\r\n")},
		{"2 MB", big.Bytes()},
	}
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:8])
}

// dialDovecot logs user in on a plain IMAP connection straight to Dovecot,
// for setting up and checking what the clients did.
func dialDovecot(t *testing.T, d *dovecottest.Dovecot, user string) *lineConn {
	t.Helper()
	c, err := net.Dial("tcp", d.IMAPAddr)
	if err != nil {
		t.Fatal(err)
	}
	lc := newLineConn(t, c)
	lc.expectPrefix("* OK ")
	lc.send("l LOGIN " + user + " " + d.Password(user))
	lc.expectUntil("l OK ")
	return lc
}

// expectUntil reads lines up to one starting with prefix (a tagged
// response), failing on another tagged response.
func (c *lineConn) expectUntil(prefix string) string {
	c.t.Helper()
	tag, _, _ := strings.Cut(prefix, " ")
	for {
		l := c.readLine()
		if strings.HasPrefix(l, prefix) {
			return l
		}
		if strings.HasPrefix(l, tag+" ") {
			c.t.Fatalf("read %q, want a line starting %q", l, prefix)
		}
		if lit, ok := imapwire.LiteralSuffix([]byte(l)); ok {
			if _, err := c.r.Discard(int(lit.Size)); err != nil {
				c.t.Fatal(err)
			}
		}
	}
}

// appendMessages stores messages in mailbox through c, each with flags
// (e.g. `\Seen \Flagged`, or "").
func (c *lineConn) appendMessages(mailbox, flags string, msgs ...[]byte) {
	c.t.Helper()
	for _, m := range msgs {
		c.sendRaw(fmt.Sprintf("a APPEND %s (%s) {%d+}\r\n%s\r\n", imapwire.Quote(mailbox), flags, len(m), m))
		c.expectUntil("a OK ")
	}
}

var fetchFlagsBody = regexp.MustCompile(`^\* \d+ FETCH \(FLAGS \(([^)]*)\) BODY\[\] \{(\d+)\}$`)

// mailboxDigest returns, sorted, one "sha256 flags" entry per message in
// mailbox, read directly from Dovecot; the hash is of norm(message), flags
// are in maildir letters, as mbsync stores them (\Recent is left out).
func (c *lineConn) mailboxDigest(mailbox string, norm func([]byte) []byte) []string {
	c.t.Helper()
	c.send("e EXAMINE " + imapwire.Quote(mailbox))
	c.expectUntil("e OK ")
	c.send("f FETCH 1:* (FLAGS BODY.PEEK[])")
	var digest []string
	for {
		l := c.readLine()
		if strings.HasPrefix(l, "f OK ") || strings.HasPrefix(l, "f BAD Error in IMAP command FETCH: Invalid messageset") {
			break // the BAD is for an empty mailbox
		}
		m := fetchFlagsBody.FindStringSubmatch(l)
		if m == nil {
			c.t.Fatalf("FETCH in %s: unexpected %q", mailbox, l)
		}
		var size int
		fmt.Sscan(m[2], &size)
		data := make([]byte, size)
		if _, err := io.ReadFull(c.r, data); err != nil {
			c.t.Fatal(err)
		}
		if rest := c.readLine(); rest != ")" {
			c.t.Fatalf("FETCH in %s: after the literal %q", mailbox, rest)
		}
		digest = append(digest, sha(norm(data))+" "+maildirFlags(m[1]))
	}
	slices.Sort(digest)
	return digest
}

// maildirFlags turns IMAP system flags into maildir info letters.
func maildirFlags(imapFlags string) string {
	letters := map[string]byte{`\draft`: 'D', `\flagged`: 'F', `\answered`: 'R', `\seen`: 'S', `\deleted`: 'T'}
	var out []byte
	for _, f := range strings.Fields(imapFlags) {
		if l, ok := letters[strings.ToLower(f)]; ok {
			out = append(out, l)
		}
	}
	slices.Sort(out)
	return string(out)
}

// curl fetches messages (several login methods), lists, examines and
// searches, directly and through both of the proxy's listeners; each request
// must print the same bytes every way.
func TestClientsCurl(t *testing.T) {
	t.Parallel()
	curl := clientBinary(t, "curl", "curl")
	d := dovecottest.Start(t, dovecottest.Options{})
	d.Doveadm(t, "mailbox", "create", "-u", "alice", "Archive", "Deep/Nested", "Entwürfe")
	d.Doveadm(t, "mailbox", "subscribe", "-u", "alice", "INBOX", "Archive", "Deep/Nested")
	msgs := clientMessages()
	for _, m := range msgs {
		d.Deliver(t, "alice@example.com", m.data)
	}
	env := clientProxy(t, d, nil)
	ca := env.ca.WriteCA(t, t.TempDir())
	ways := []struct {
		name string
		base string // URL scheme://host:port
		tls  []string
	}{
		{"direct", "imap://" + d.IMAPAddr, nil},
		{"proxy TLS", "imaps://" + env.tlsAddr, []string{"--cacert", ca}},
		{"proxy STARTTLS", "imap://" + env.starttlsAddr, []string{"--ssl-reqd", "--cacert", ca}},
	}
	run := func(path string, extra ...string) []byte {
		t.Helper()
		var first []byte
		for i, w := range ways {
			args := append([]string{"-q", "--silent", "--show-error", "--max-time", "20", "-u", "alice:alicepw"}, w.tls...)
			args = append(append(args, extra...), w.base+path)
			out := runClient(t, nil, curl, args...)
			if i == 0 {
				first = out
				if len(out) == 0 {
					t.Errorf("curl %s %q printed nothing directly", path, extra)
				}
				continue
			}
			if !bytes.Equal(out, first) {
				t.Errorf("curl %s %q: %s printed %d bytes (sha %s), direct %d bytes (sha %s)\n%s:\n%s\ndirect:\n%s",
					path, extra, w.name, len(out), sha(out), len(first), sha(first), w.name, abbrev(out), abbrev(first))
			}
		}
		return first
	}

	// Fetching sets \Seen (curl fetches BODY[], not BODY.PEEK[]) and the
	// first SELECT takes \Recent, so the fetches come first: the read-only
	// requests after them see one unchanging state every way.
	for i, m := range msgs {
		uid := fmt.Sprint(i + 1)
		got := run("/INBOX;UID=" + uid)
		// The message as delivered, after Dovecot's trace fields.
		if !bytes.Equal(dovecottest.StripTrace(got), m.data) {
			t.Errorf("%s: fetched %d bytes, not the %d delivered", m.name, len(got), len(m.data))
		}
	}
	// AUTHENTICATE LOGIN (the password after a continuation) instead of
	// curl's AUTHENTICATE PLAIN with an initial response; partial fetches.
	run("/INBOX;UID=3", "--login-options", "AUTH=LOGIN")
	run("/INBOX;UID=1;SECTION=HEADER.FIELDS%20(SUBJECT%20FROM)")
	run("/INBOX;UID=5;SECTION=TEXT;PARTIAL=1000.500")
	// Read-only requests: LIST "" *, LSUB, SELECT + SEARCH, and custom
	// commands whose untagged responses curl prints.
	run("/")
	run("/", "-X", `LSUB "" *`)
	run("/INBOX?SUBJECT%20tricky")
	run("/INBOX?BODY%20%22CAPABILITY%22")
	run("/", "-X", "EXAMINE INBOX")
	run("/", "-X", "STATUS INBOX (MESSAGES UIDNEXT UIDVALIDITY UNSEEN)")
	run("/INBOX", "-X", "UID FETCH 1:* (FLAGS RFC822.SIZE INTERNALDATE ENVELOPE BODYSTRUCTURE)")
}

// With forward_client_ip, Dovecot (which trusts the proxy's address, in
// login_trusted_networks) logs the real client's address for a login
// through the proxy, over TLS and over STARTTLS, as for a client connecting
// directly; a client's own claim of another address (ID x-originating-ip)
// does not get through. Without forward_client_ip, Dovecot logs the
// proxy's address.
func TestClientsClientIPInDovecotLog(t *testing.T) {
	t.Parallel()
	d := dovecottest.Start(t, dovecottest.Options{
		Users:       map[string]string{"alice": "alicepw", "bob": "bobpw", "carol": "carolpw", "dave": "davepw"},
		ExtraConfig: "login_trusted_networks = 127.0.0.1/32",
	})
	forwarding := clientProxy(t, d, func(o *Options) { o.Backend.ForwardClientIP = true })
	notForwarding := clientProxy(t, d, nil)
	from := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}, Timeout: readTimeout}
	dial := func(addr string) *lineConn {
		t.Helper()
		c, err := from.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		if got := c.LocalAddr().(*net.TCPAddr).IP.String(); got != "127.0.0.2" {
			t.Fatalf("connected from %s", got)
		}
		return newLineConn(t, c)
	}
	startTLS := func(env *proxyEnv, c *lineConn) *lineConn {
		t.Helper()
		tc := tls.Client(c.conn, &tls.Config{RootCAs: env.ca.Pool(), ServerName: "127.0.0.1"})
		if err := tc.Handshake(); err != nil {
			t.Fatal(err)
		}
		return newLineConn(t, tc)
	}
	// login reads the greeting, logs in and out.
	login := func(c *lineConn, user string) {
		t.Helper()
		c.expectPrefix("* OK ")
		c.send("l LOGIN " + user + " " + d.Password(user))
		c.expectUntil("l OK ")
		c.send("o LOGOUT")
		c.expectUntil("o OK ")
	}

	// alice: through the forwarding proxy, implicit TLS.
	c := dial(forwarding.tlsAddr)
	login(startTLS(forwarding, c), "alice")
	// carol: through the forwarding proxy, STARTTLS, with an ID of her own
	// that claims another address. (Dovecot 2.3 ignores x-originating-ip
	// after the proxy's ID anyway; TestClientIDCannotClaimAnAddress checks
	// that the proxy strips it.)
	c = dial(forwarding.starttlsAddr)
	c.expectPrefix("* OK ")
	c.send("s STARTTLS")
	c.expectUntil("s OK ")
	c = startTLS(forwarding, c)
	c.send(`i ID ("name" "spoofer" "x-originating-ip" "10.9.9.9" "X-Connected-IP" "10.9.9.8")`)
	c.expectUntil("i OK ")
	c.send("l LOGIN carol " + d.Password("carol"))
	c.expectUntil("l OK ")
	// bob: through the proxy without forwarding.
	c = dial(notForwarding.tlsAddr)
	login(startTLS(notForwarding, c), "bob")
	// dave: directly.
	login(dial(d.IMAPAddr), "dave")

	want := map[string]string{
		"alice": "rip=127.0.0.2, lip=127.0.0.1",
		"carol": "rip=127.0.0.2, lip=127.0.0.1",
		"bob":   "rip=127.0.0.1, lip=127.0.0.1",
		"dave":  "rip=127.0.0.2, lip=127.0.0.1",
	}
	got := dovecotLoginAddrs(t, d, len(want))
	for user, w := range want {
		if got[user] != w {
			t.Errorf("%s's login: Dovecot logged %q, want %q", user, got[user], w)
		}
	}
	if t.Failed() {
		t.Logf("Dovecot's log:\n%s", d.Log())
	}
}

// dovecotLoginAddrs waits (up to 10 s) until Dovecot's log holds the
// logins of n users, and returns, per user, the addresses each login
// was logged with ("rip=..., lip=...").
func dovecotLoginAddrs(t *testing.T, d *dovecottest.Dovecot, n int) map[string]string {
	t.Helper()
	loginLine := regexp.MustCompile(`imap-login: Info: Login: user=<(\w+)>, method=\w+, (rip=[0-9.]+, lip=[0-9.]+),`)
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := map[string]string{}
		for _, m := range loginLine.FindAllStringSubmatch(d.Log(), -1) {
			got[m[1]] += m[2]
		}
		if len(got) >= n || time.Now().After(deadline) {
			return got
		}
		time.Sleep(10 * time.Millisecond) // polling Dovecot's log, with a deadline
	}
}
