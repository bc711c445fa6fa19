package proxy

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/xapsproxy/xapsproxy/store"
)

func TestCapabilitiesBeforeAndAfterLogin(t *testing.T) {
	t.Parallel()
	_, client, backend := proxySession(t, nil)

	client.send("c1 CAPABILITY")
	backend.expect("c1 CAPABILITY")
	backend.send("* CAPABILITY IMAP4rev1 STARTTLS LITERAL+ COMPRESS=DEFLATE AUTH=PLAIN", "c1 OK Pre-login capabilities listed.")
	client.expect("* CAPABILITY IMAP4rev1 LITERAL+ AUTH=PLAIN", "c1 OK Pre-login capabilities listed.")

	login(t, client, backend, "alice")

	client.send("c2 CAPABILITY")
	backend.expect("c2 CAPABILITY")
	backend.send("* CAPABILITY IMAP4rev1 IDLE NOTIFY XAPPLEPUSHSERVICE", "c2 OK Capability completed.")
	client.expect("* CAPABILITY IMAP4rev1 IDLE NOTIFY XAPPLEPUSHSERVICE", "c2 OK Capability completed.")
}

func TestEditCapabilities(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		p    capPolicy
		in   string
		want string
	}{
		{"untagged after login", capPolicy{xaps: true}, "* CAPABILITY IMAP4rev1 IDLE\r\n", "* CAPABILITY IMAP4rev1 IDLE XAPPLEPUSHSERVICE\r\n"},
		{"lower case", capPolicy{xaps: true}, "* capability IMAP4rev1\r\n", "* CAPABILITY IMAP4rev1 XAPPLEPUSHSERVICE\r\n"},
		{"starttls offered by the proxy", capPolicy{startTLS: true}, "* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] hi\r\n", "* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN STARTTLS] hi\r\n"},
		{"backend starttls hidden", capPolicy{}, "* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] hi\r\n", "* OK [CAPABILITY IMAP4rev1 LOGINDISABLED] hi\r\n"},
		{"compress removed", capPolicy{xaps: true}, "a OK [CAPABILITY IMAP4rev1 COMPRESS=DEFLATE] Logged in\r\n", "a OK [CAPABILITY IMAP4rev1 XAPPLEPUSHSERVICE] Logged in\r\n"},
		{"unauthenticate removed", capPolicy{xaps: true}, "* CAPABILITY IMAP4rev2 UNAUTHENTICATE IDLE\r\n", "* CAPABILITY IMAP4rev2 IDLE XAPPLEPUSHSERVICE\r\n"},
		{"no login before STARTTLS", capPolicy{startTLS: true, loginDisabled: true}, "* CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN AUTH=LOGIN LOGINDISABLED\r\n", "* CAPABILITY IMAP4rev1 SASL-IR STARTTLS LOGINDISABLED\r\n"},
		{"backend's own STARTTLS is not the client's", capPolicy{}, "* CAPABILITY IMAP4rev1 STARTTLS AUTH=PLAIN\r\n", "* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n"},
		{"stale code dropped", capPolicy{dropCode: true}, "* OK [CAPABILITY IMAP4rev1 STARTTLS] Dovecot ready.\r\n", "* OK Dovecot ready.\r\n"},
		{"other code untouched", capPolicy{xaps: true}, "* OK [UIDNEXT 4] Predicted next UID\r\n", "* OK [UIDNEXT 4] Predicted next UID\r\n"},
		{"message text untouched", capPolicy{xaps: true}, "* 1 FETCH (BODY[] {20}\r\n", "* 1 FETCH (BODY[] {20}\r\n"},
		{"not a capability response", capPolicy{xaps: true}, "* CAPABILITYX a\r\n", "* CAPABILITYX a\r\n"},
	}
	for _, tt := range tests {
		if got := string(editCapabilities([]byte(tt.in), tt.p)); got != tt.want {
			t.Errorf("%s: got %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestXAPPLEPUSHSERVICEVersion2(t *testing.T) {
	t.Parallel()
	env, client, backend := proxySession(t, nil)
	login(t, client, backend, "alice")

	client.send(v2Line)
	client.expect(wantXAPSReply("a2", "2", `"INBOX"`, `"Notes"`)...)
	regs := env.registrations()
	if len(regs) != 1 {
		t.Fatalf("%d registrations stored, want 1", len(regs))
	}
	r := regs[0]
	if r.User != "alice" || r.DeviceToken != "2918390218931890821908309283098109381029309829018310983092892829" ||
		r.AccountID != "0715A26B-CA09-4730-A419-793000CA982E" || r.Subtopic != "com.apple.mobilemail" ||
		r.Version != 2 || r.Topic != testTopic || strings.Join(r.Mailboxes, ",") != "INBOX,Notes" || r.Renewed.IsZero() {
		t.Errorf("stored %+v", r)
	}
	// The command never reached the backend: the next thing it sees is NOOP.
	client.send("n1 NOOP")
	backend.expect("n1 NOOP")
}

func TestXAPPLEPUSHSERVICEVersion1(t *testing.T) {
	t.Parallel()
	env, client, backend := proxySession(t, nil)
	login(t, client, backend, "bob")

	client.send(v1Line)
	client.expect(wantXAPSReply("tag1", "1", `"INBOX"`)...)
	regs := env.registrations()
	if len(regs) != 1 || regs[0].Version != 1 || strings.Join(regs[0].Mailboxes, ",") != "INBOX" || regs[0].User != "bob" {
		t.Fatalf("stored %+v", regs)
	}
}

func TestXAPPLEPUSHSERVICEOddButValid(t *testing.T) {
	t.Parallel()
	const token = "2918390218931890821908309283098109381029309829018310983092892829"
	tests := []struct {
		name      string
		send      []string // raw client bytes, sent in order; "+" waits for a continuation
		mailboxes string
		reply     []string // the mailboxes in the reply, as sent
	}{
		{"keys in any case and order", []string{"x XAPPLEPUSHSERVICE MAILBOXES (Notes) APS-DEVICE-TOKEN " + strings.ToUpper(token) + " Aps-Account-Id A aps-version 2\r\n"}, "Notes", []string{`"Notes"`}},
		{"NIL value and NIL list element", []string{"x XAPPLEPUSHSERVICE aps-version 2 aps-account-id A aps-device-token " + token + " aps-subtopic NIL mailboxes (NIL INBOX inbox)\r\n"}, "INBOX", []string{`"INBOX"`}},
		{"missing mailboxes list", []string{"x XAPPLEPUSHSERVICE aps-version 2 aps-account-id A aps-device-token " + token + "\r\n"}, "INBOX", []string{`"INBOX"`}},
		{"NIL mailboxes", []string{"x XAPPLEPUSHSERVICE aps-version 2 aps-account-id A aps-device-token " + token + " mailboxes NIL\r\n"}, "INBOX", []string{`"INBOX"`}},
		{"duplicate key, same value; unknown key", []string{"x XAPPLEPUSHSERVICE aps-version 2 aps-version 2 aps-foo (bar) aps-account-id A aps-device-token " + token + " mailboxes (\"Sent Messages\")\r\n"}, "Sent Messages", []string{`"Sent Messages"`}},
		{"synchronizing literals", []string{"x XAPPLEPUSHSERVICE aps-version 2 aps-account-id {1}\r\n", "+", "A aps-device-token " + token + " mailboxes ({5}\r\n", "+", "Notes)\r\n"}, "Notes", []string{`"Notes"`}},
		{"non-synchronizing literal", []string{"x XAPPLEPUSHSERVICE aps-version 2 aps-account-id {1+}\r\nA aps-device-token " + token + " mailboxes (Entw&APw-rfe)\r\n"}, "Entw&APw-rfe", []string{`"Entw&APw-rfe"`}},
		{"quotes in a name", []string{"x XAPPLEPUSHSERVICE aps-version 2 aps-account-id A aps-device-token " + token + " mailboxes (INBOX \"say \\\"hi\\\"\")\r\n"}, `INBOX,say "hi"`, []string{`"INBOX"`, `"say \"hi\""`}},
		// A UTF-8 name (UTF8=ACCEPT) goes back as a literal: IMAP4rev1 quoted strings are 7-bit.
		{"UTF-8 name", []string{"x XAPPLEPUSHSERVICE aps-version 2 aps-account-id A aps-device-token " + token + " mailboxes (\"Entwürfe\")\r\n"}, "Entwürfe", []string{"{9}\r\nEntwürfe"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			env, client, backend := proxySession(t, nil)
			login(t, client, backend, "alice")
			for _, s := range tt.send {
				if s == "+" {
					client.expect("+ Ready for literal data")
					continue
				}
				client.sendRaw(s)
			}
			client.expect(wantXAPSReply("x", "2", tt.reply...)...)
			regs := env.registrations()
			if len(regs) != 1 || regs[0].DeviceToken != token || regs[0].AccountID != "A" || strings.Join(regs[0].Mailboxes, ",") != tt.mailboxes || regs[0].Subtopic != "com.apple.mobilemail" {
				t.Fatalf("stored %+v, want mailboxes %s", regs, tt.mailboxes)
			}
		})
	}
}

func TestXAPPLEPUSHSERVICEMalformed(t *testing.T) {
	t.Parallel()
	const token = "2918390218931890821908309283098109381029309829018310983092892829"
	tests := []struct {
		name, line, want string
	}{
		{"no arguments", "b XAPPLEPUSHSERVICE", "b BAD XAPPLEPUSHSERVICE needs aps-version"},
		{"missing token", "b XAPPLEPUSHSERVICE aps-version 2 aps-account-id A", "b BAD XAPPLEPUSHSERVICE needs aps-device-token"},
		{"short token", "b XAPPLEPUSHSERVICE aps-version 2 aps-account-id A aps-device-token abcd", "b BAD XAPPLEPUSHSERVICE aps-device-token must be 64 hex digits"},
		{"non-hex token", "b XAPPLEPUSHSERVICE aps-version 2 aps-account-id A aps-device-token " + strings.Repeat("g", 64), "b BAD XAPPLEPUSHSERVICE aps-device-token must be 64 hex digits"},
		{"missing account", "b XAPPLEPUSHSERVICE aps-version 2 aps-device-token " + token, "b BAD XAPPLEPUSHSERVICE needs aps-account-id"},
		{"bad version", "b XAPPLEPUSHSERVICE aps-version 3 aps-account-id A aps-device-token " + token, `b BAD XAPPLEPUSHSERVICE aps-version "3" is not supported (1 or 2)`},
		{"conflicting duplicate", "b XAPPLEPUSHSERVICE aps-version 2 aps-version 1", "b BAD XAPPLEPUSHSERVICE gives aps-version twice with different values"},
		{"key without value", "b XAPPLEPUSHSERVICE aps-version", "b BAD XAPPLEPUSHSERVICE expected space"},
		{"unterminated list", "b XAPPLEPUSHSERVICE aps-version 2 mailboxes (INBOX", "b BAD XAPPLEPUSHSERVICE expected space"},
		{"unterminated quote", `b XAPPLEPUSHSERVICE aps-version "2`, "b BAD XAPPLEPUSHSERVICE unterminated quoted string"},
		{"NIL key", "b XAPPLEPUSHSERVICE NIL 2", "b BAD XAPPLEPUSHSERVICE NIL is not a key"},
		{"literal too large", "b XAPPLEPUSHSERVICE aps-version {5000}", "b BAD XAPPLEPUSHSERVICE literal too large: 5000 bytes is over the limit of 1024"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			env, client, backend := proxySession(t, nil)
			login(t, client, backend, "alice")
			client.send(tt.line)
			client.expect(tt.want)
			// The session goes on, and the backend never saw the command.
			client.send("n1 NOOP")
			backend.expect("n1 NOOP")
			backend.send("n1 OK NOOP completed.")
			client.expect("n1 OK NOOP completed.")
			if regs := env.registrations(); len(regs) != 0 {
				t.Errorf("stored %+v", regs)
			}
		})
	}
}

func TestXAPPLEPUSHSERVICEBeforeLogin(t *testing.T) {
	t.Parallel()
	env, client, backend := proxySession(t, nil)
	client.send(v2Line)
	client.expect("a2 BAD XAPPLEPUSHSERVICE is only valid after login")
	// A literal before login is refused without being read.
	client.send("a3 XAPPLEPUSHSERVICE aps-version {100000}")
	client.expect("a3 BAD XAPPLEPUSHSERVICE is only valid after login")
	// A failed login does not authenticate either.
	client.send("l1 LOGIN alice wrong")
	backend.expect("l1 LOGIN alice wrong")
	backend.send("l1 NO [AUTHENTICATIONFAILED] Authentication failed.")
	client.expect("l1 NO [AUTHENTICATIONFAILED] Authentication failed.")
	client.send(v1Line)
	client.expect("tag1 BAD XAPPLEPUSHSERVICE is only valid after login")
	client.send("n1 NOOP")
	backend.expect("n1 NOOP")
	if regs := env.registrations(); len(regs) != 0 {
		t.Errorf("stored %+v", regs)
	}
}

func TestXAPPLEPUSHSERVICETooManyDevices(t *testing.T) {
	t.Parallel()
	b := startFakeBackend(t)
	env := startProxy(t, b.addr(), nil)
	env.fail = fmt.Errorf("store: register: %w", store.ErrLimit)
	client, backend := env.session(t, b)
	login(t, client, backend, "alice")
	client.send(v2Line)
	client.expect("a2 NO [LIMIT] XAPPLEPUSHSERVICE too many devices are registered for this account")
}

func TestXAPPLEPUSHSERVICEStoreFailure(t *testing.T) {
	t.Parallel()
	b := startFakeBackend(t)
	env := startProxy(t, b.addr(), nil)
	env.fail = errors.New("disk full")
	client, backend := env.session(t, b)
	login(t, client, backend, "alice")
	client.send(v2Line)
	client.expect("a2 NO [UNAVAILABLE] XAPPLEPUSHSERVICE registration could not be stored, try again later")
}

// The reply to XAPPLEPUSHSERVICE comes after the replies to commands the
// client pipelined before it, and before those it pipelined after it.
func TestXAPPLEPUSHSERVICEPipelined(t *testing.T) {
	t.Parallel()
	_, client, backend := proxySession(t, nil)
	login(t, client, backend, "alice")

	client.send("p1 SELECT INBOX", v2Line, "p3 NOOP")
	backend.expect("p1 SELECT INBOX")
	backend.send("* 3 EXISTS", "p1 OK [READ-WRITE] Select completed.")
	backend.expect("p3 NOOP")
	backend.send("p3 OK NOOP completed.")
	client.expect("* 3 EXISTS", "p1 OK [READ-WRITE] Select completed.")
	client.expect(wantXAPSReply("a2", "2", `"INBOX"`, `"Notes"`)...)
	client.expect("p3 OK NOOP completed.")
}

func TestAuthenticatePlainUser(t *testing.T) {
	t.Parallel()
	// "\x00alice\x00secret" and "bob\x00alice\x00secret" (authzid bob).
	const alice, bobAsAlice = "AGFsaWNlAHNlY3JldA==", "Ym9iAGFsaWNlAHNlY3JldA=="
	tests := []struct {
		name, user string
		exchange   func(client, backend *lineConn)
	}{
		{"initial response", "alice", func(client, backend *lineConn) {
			client.send("au AUTHENTICATE PLAIN " + alice)
			backend.expect("au AUTHENTICATE PLAIN " + alice)
		}},
		{"continuation", "alice", func(client, backend *lineConn) {
			client.send("au AUTHENTICATE PLAIN")
			backend.expect("au AUTHENTICATE PLAIN")
			backend.send("+ ")
			client.expect("+ ")
			client.send(alice)
			backend.expect(alice)
		}},
		{"authorization identity, allowed", "bob", func(client, backend *lineConn) {
			client.send("au authenticate plain " + bobAsAlice)
			backend.expect("au AUTHENTICATE PLAIN " + bobAsAlice)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			env, client, backend := proxySession(t, func(o *Options) { o.AllowMasterLogins = true })
			tt.exchange(client, backend)
			backend.send("au " + loginOKCaps)
			client.expect("au OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT LITERAL+ NOTIFY XAPPLEPUSHSERVICE] Logged in")
			client.send(v2Line)
			client.expect(wantXAPSReply("a2", "2", `"INBOX"`, `"Notes"`)...)
			if regs := env.registrations(); len(regs) != 1 || regs[0].User != tt.user {
				t.Fatalf("stored %+v, want user %s", regs, tt.user)
			}
		})
	}
}

func TestLoginWithLiterals(t *testing.T) {
	t.Parallel()
	env, client, backend := proxySession(t, nil)

	// The proxy reads LOGIN itself, answering the literals, and sends it
	// on anew.
	client.sendRaw("l1 LOGIN {5}\r\n")
	client.expect("+ Ready for literal data")
	client.sendRaw("alice {6+}\r\nsecret\r\n")
	backend.expect("l1 LOGIN alice secret")
	backend.send("l1 OK Logged in")
	client.expect("l1 OK Logged in")
	client.send(v1Line)
	client.expect(wantXAPSReply("tag1", "1", `"INBOX"`)...)
	if regs := env.registrations(); len(regs) != 1 || regs[0].User != "alice" {
		t.Fatalf("stored %+v", regs)
	}
}

func TestLiteralForwarding(t *testing.T) {
	t.Parallel()
	_, client, backend := proxySession(t, nil)
	login(t, client, backend, "alice")

	// The backend refuses a synchronizing literal: the client sends no data
	// and the next command goes through as a command.
	client.sendRaw("a1 APPEND INBOX {99999999}\r\n")
	backend.expect("a1 APPEND INBOX {99999999}")
	backend.send("a1 NO [LIMIT] Message too large")
	client.expect("a1 NO [LIMIT] Message too large")
	backend.answerSync()

	// Message bytes that look like protocol are passed through untouched, in
	// both directions.
	msg := "Subject: hi\r\n\r\n* CAPABILITY IMAP4rev1\r\na9 XAPPLEPUSHSERVICE aps-version 1\r\n"
	client.sendRaw("a2 APPEND INBOX {" + itoa(len(msg)) + "}\r\n")
	backend.expect("a2 APPEND INBOX {" + itoa(len(msg)) + "}")
	backend.send("+ OK")
	client.expect("+ OK")
	client.sendRaw(msg + "\r\n")
	backend.expect("Subject: hi", "", "* CAPABILITY IMAP4rev1", "a9 XAPPLEPUSHSERVICE aps-version 1", "")
	backend.send("a2 OK [APPENDUID 1 1] Append completed.")
	client.expect("a2 OK [APPENDUID 1 1] Append completed.")

	client.send("f1 FETCH 1 BODY[]")
	backend.expect("f1 FETCH 1 BODY[]")
	backend.sendRaw("* 1 FETCH (BODY[] {" + itoa(len(msg)) + "}\r\n" + msg + ")\r\nf1 OK Fetch completed.\r\n")
	client.expect("* 1 FETCH (BODY[] {"+itoa(len(msg))+"}", "Subject: hi", "", "* CAPABILITY IMAP4rev1", "a9 XAPPLEPUSHSERVICE aps-version 1", ")", "f1 OK Fetch completed.")
}

func TestIdleThenRegister(t *testing.T) {
	t.Parallel()
	_, client, backend := proxySession(t, nil)
	login(t, client, backend, "alice")

	client.send("i1 IDLE")
	backend.expect("i1 IDLE")
	backend.send("+ idling", "* 4 EXISTS")
	client.expect("+ idling", "* 4 EXISTS")
	client.send("DONE")
	backend.expect("DONE")
	backend.send("i1 OK Idle completed.")
	client.expect("i1 OK Idle completed.")
	client.send(v2Line)
	client.expect(wantXAPSReply("a2", "2", `"INBOX"`, `"Notes"`)...)
}

func TestSTARTTLS(t *testing.T) {
	t.Parallel()
	b := startFakeBackend(t)
	env := startProxy(t, b.addr(), nil)
	plain := env.dialPlain(t)
	backend := b.accept(t, greetingCaps)
	plain.expect("* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ STARTTLS LOGINDISABLED] Dovecot ready.")
	plain.send("l0 LOGIN alice secret")
	plain.expect("l0 NO [PRIVACYREQUIRED] Use STARTTLS before logging in")
	plain.send("l1 AUTHENTICATE PLAIN")
	plain.expect("l1 NO [PRIVACYREQUIRED] Use STARTTLS before logging in")
	plain.send("s1 STARTTLS")
	plain.expect("s1 OK Begin TLS negotiation now")
	tc := tls.Client(plain.conn, &tls.Config{RootCAs: env.ca.Pool(), ServerName: "127.0.0.1"})
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	if v := tc.ConnectionState().Version; v < tls.VersionTLS12 {
		t.Errorf("TLS version %x", v)
	}
	client := &lineConn{t: t, conn: tc, r: bufio.NewReader(tc)}
	client.send("c1 CAPABILITY")
	backend.expect("c1 CAPABILITY")
	backend.send("* CAPABILITY IMAP4rev1 AUTH=PLAIN", "c1 OK done")
	client.expect("* CAPABILITY IMAP4rev1 AUTH=PLAIN", "c1 OK done")
	client.send("s2 STARTTLS")
	client.expect("s2 BAD TLS is already active")
	login(t, client, backend, "alice")
}

func TestSTARTTLSRefusesPipelinedPlaintext(t *testing.T) {
	t.Parallel()
	b := startFakeBackend(t)
	env := startProxy(t, b.addr(), nil)
	plain := env.dialPlain(t)
	b.accept(t, greetingCaps)
	plain.readLine()
	plain.send("s1 STARTTLS", "s2 LOGIN alice secret")
	plain.expect("* BYE Commands pipelined after STARTTLS")
	plain.expectClosed()
}

func TestSTARTTLSOnTLSListener(t *testing.T) {
	t.Parallel()
	_, client, backend := proxySession(t, nil)
	client.send("s1 STARTTLS")
	client.expect("s1 BAD TLS is already active")
	client.send("z1 COMPRESS DEFLATE")
	client.expect("z1 NO COMPRESS is not available through this proxy")
	client.send("n1 NOOP")
	backend.expect("n1 NOOP")
}

func TestBackendUnavailable(t *testing.T) {
	t.Parallel()
	ln := listen(t)
	addr := ln.Addr().String()
	ln.Close() // nothing listens there any more
	env := startProxy(t, addr, nil)
	client := env.dialTLS(t)
	client.expect("* BYE [UNAVAILABLE] Backend server unavailable, try again later")
	client.expectClosed()
}

func TestBackendGreetsWithBYE(t *testing.T) {
	t.Parallel()
	b := startFakeBackend(t)
	env := startProxy(t, b.addr(), nil)
	client := env.dialTLS(t)
	b.accept(t, "* BYE Too many connections")
	client.expect("* BYE [UNAVAILABLE] Backend server unavailable, try again later")
	client.expectClosed()
}

func TestLineTooLong(t *testing.T) {
	t.Parallel()
	b := startFakeBackend(t)
	env := startProxy(t, b.addr(), nil)
	client, _ := env.session(t, b)
	client.sendRaw("a NOOP " + strings.Repeat("x", maxLineLength) + "\r\n")
	client.expect("* BYE Command line too long")
	client.expectClosed()
}

func TestShutdownSaysBYE(t *testing.T) {
	t.Parallel()
	b := startFakeBackend(t)
	env := startProxy(t, b.addr(), nil)
	client, _ := env.session(t, b)
	done := make(chan error, 1)
	go func() { done <- env.srv.Shutdown(t.Context()) }()
	client.expect("* BYE Server shutting down")
	client.expectClosed()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(readTimeout):
		t.Fatal("Shutdown did not return")
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

func TestClassify(t *testing.T) {
	t.Parallel()
	tests := []struct {
		line       string
		kind       int
		tag, word  string
		capability bool
	}{
		{"+ idling\r\n", respContinuation, "", "", false},
		{"a1 OK [CAPABILITY IMAP4rev1] Logged in\r\n", respTagged, "a1", "OK", true},
		{"a1 NO [AUTHENTICATIONFAILED] no\r\n", respTagged, "a1", "NO", false},
		{"* OK [CAPABILITY IMAP4rev1] ready\r\n", respStatus, "", "OK", true},
		{"* BYE shutting down {5}\r\n", respStatus, "", "BYE", false},
		{"* CAPABILITY IMAP4rev1 IDLE\r\n", respData, "", "", true},
		{"* 1 FETCH (BODY[] {3}\r\n", respData, "", "", false},
		{"* 3 EXISTS\r\n", respData, "", "", false},
	}
	for _, tt := range tests {
		kind, tag, word, caps := classify([]byte(tt.line))
		if kind != tt.kind || tag != tt.tag || word != tt.word || caps != tt.capability {
			t.Errorf("classify(%q) = %d %q %q %v", tt.line, kind, tag, word, caps)
		}
	}
}

// A user name that is not UTF-8 (Latin-1, say) cannot be stored by every
// store (PostgreSQL's text is UTF-8): a clear NO, not "try again later",
// and nothing reaches the store.
func TestXAPPLEPUSHSERVICEUserNotUTF8(t *testing.T) {
	t.Parallel()
	b := startFakeBackend(t)
	env := startProxy(t, b.addr(), nil)
	client, backend := env.session(t, b)
	client.send("l1 LOGIN \"m\xfcller\" secret")
	backend.expect("l1 LOGIN {6}") // 8-bit: sent on as a literal
	backend.send("+ OK")
	backend.expect("m\xfcller secret")
	backend.send("l1 OK Logged in")
	client.expect("l1 OK Logged in")
	client.send(v2Line)
	client.expect("a2 NO [CANNOT] XAPPLEPUSHSERVICE the user name is not UTF-8; push cannot be registered for it")
	if regs := env.registrations(); len(regs) != 0 {
		t.Errorf("stored %+v", regs)
	}
}
