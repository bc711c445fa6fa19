package proxy

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/xapsproxy/xapsproxy/internal/dovecottest"
)

// imaplibScript is a session of Python's imaplib: log in, LIST, SELECT,
// FETCH every message, APPEND one, STORE flags on it, EXPUNGE it, LOGOUT.
// It prints every result, except what rightly differs between runs (UIDs
// and UIDNEXT advance by one per run; it prints whether they agree
// instead; \Marked comes and goes with Dovecot's list index). It leaves the mailbox's messages as they were.
// Usage: script tls|starttls|plain HOST PORT [CAFILE].
const imaplibScript = `import hashlib, imaplib, re, ssl, sys
mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
ctx = ssl.create_default_context(cafile=sys.argv[4]) if mode != "plain" else None
if mode == "tls":
    M = imaplib.IMAP4_SSL(host, port, ssl_context=ctx)
else:
    M = imaplib.IMAP4(host, port)
    if mode == "starttls":
        print("starttls", M.starttls(ssl_context=ctx)[0])
def ok(r):  # the data of an OK, without Dovecot's timings
    assert r[0] == "OK", r
    return [re.sub(rb" \([0-9.+ ]+ secs\)", b"", d) if isinstance(d, bytes) else d for d in r[1]]
print("login", ok(M.login("alice", "alicepw")))
unmark = lambda l: l.replace(b" \\Marked", b"")  # Dovecot sets \Marked when its list index catches up
for l in ok(M.list()): print("list", unmark(l))
for l in ok(M.list('""', "Deep/%")): print("list Deep", unmark(l))
print("status", ok(M.status("Archive", "(MESSAGES UNSEEN)")))
n = int(ok(M.select("INBOX"))[0])
uidnext = int(M.response("UIDNEXT")[1][0])
print("select", n, M.response("FLAGS"))
for d in ok(M.fetch("1:*", "(UID RFC822.SIZE BODY.PEEK[])")):
    if isinstance(d, tuple): print("fetch", d[0], hashlib.sha256(d[1]).hexdigest()[:16], len(d[1]))
    else: print("fetch", d)
msg = b"From: Py <py@example.com>\r\nSubject: from imaplib\r\n\r\nGr\xc3\xbc\xc3\x9fe \xff\r\n* OK looks like a response\r\n"
r = ok(M.append("INBOX", "(\\Seen $Label1)", '"01-Jan-2024 10:00:00 +0100"', msg))
code = r[0].split(b" ")
print("append", code[0], code[2] == b"%d]" % uidnext)
print("search", ok(M.search(None, "HEADER", "Subject", "imaplib")))
for d in ok(M.fetch(str(n + 1), "(FLAGS INTERNALDATE BODY.PEEK[])")):
    print("fetch new", d if not isinstance(d, tuple) else (d[0], d[1] == msg))
print("store", ok(M.store(str(n + 1), "+FLAGS", "(\\Flagged \\Deleted)")))
print("expunge", ok(M.expunge()))
print("noop", ok(M.noop()))
print("close", ok(M.close()))
print("logout", M.logout())
`

// Python's imaplib runs one session (LIST, SELECT, FETCH, APPEND, STORE,
// EXPUNGE) directly, through the proxy's TLS listener and through its
// STARTTLS listener; all three must print the same.
func TestClientsPythonImaplib(t *testing.T) {
	t.Parallel()
	python := clientBinary(t, "python3", "python3")
	d := dovecottest.Start(t, dovecottest.Options{})
	d.Doveadm(t, "mailbox", "create", "-u", "alice", "Archive", "Deep/Nested", "Deep/Other", "Entwürfe")
	for _, m := range clientMessages() {
		d.Deliver(t, "alice@example.com", m.data)
	}
	c := dialDovecot(t, d, "alice")
	c.appendMessages("Archive", `\Seen`, []byte("Subject: archived\r\n\r\nold\r\n"))
	c.appendMessages("Archive", "", []byte("Subject: archived 2\r\n\r\nnew\r\n"))
	// The keyword the script sets, so that the first session does not add
	// it to INBOX's FLAGS for the later ones.
	c.appendMessages("INBOX", "$Label1", []byte("Subject: labelled\r\n\r\nx\r\n"))
	env := clientProxy(t, d, nil)
	dir := t.TempDir()
	ca := env.ca.WriteCA(t, dir)
	script := filepath.Join(dir, "session.py")
	if err := os.WriteFile(script, []byte(imaplibScript), 0o644); err != nil {
		t.Fatal(err)
	}
	host, port := splitAddr(t, d.IMAPAddr)
	direct := runClient(t, nil, python, script, "plain", host, port)
	// Each session appends and expunges one message; the first one also
	// takes \Recent of the delivered messages, which the script never shows.
	for _, c := range []struct{ mode, addr string }{{"tls", env.tlsAddr}, {"starttls", env.starttlsAddr}} {
		host, port := splitAddr(t, c.addr)
		got := runClient(t, nil, python, script, c.mode, host, port, ca)
		got = bytes.TrimPrefix(got, []byte("starttls OK\n"))
		if !bytes.Equal(got, direct) {
			t.Errorf("imaplib through the proxy (%s) printed:\n%s\ndirectly:\n%s", c.mode, got, direct)
		}
	}
	if t.Failed() || testing.Verbose() {
		t.Logf("imaplib printed:\n%s", direct)
	}
	for _, want := range []string{`fetch new (b'7 (FLAGS (\\Seen \\Recent $Label1) INTERNALDATE "01-Jan-2024 09:00:00 +0000" BODY[] {`, ", True)", "append b'[APPENDUID' True",
		"expunge [b'7']", "logout ('BYE'"} {
		if !strings.Contains(string(direct), want) {
			t.Errorf("imaplib did not print %q", want)
		}
	}
}

func splitAddr(t *testing.T, addr string) (host, port string) {
	t.Helper()
	host, port, ok := strings.Cut(addr, ":")
	if !ok {
		t.Fatalf("address %q", addr)
	}
	return host, port
}
