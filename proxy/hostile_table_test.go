package proxy

import (
	"strings"
	"testing"
)

// Hostile client input through the running proxy: each row is what a client
// sends in one state, what the backend sees and says ("> " lines the backend
// must receive, "< " lines it sends), and the client's exact reply. After
// each row that keeps the session, a NOOP must be the very next thing the
// backend receives: nothing else of the row reached it.
func TestHostileInput(t *testing.T) {
	t.Parallel()
	const (
		preLogin = iota
		loggedIn
		plaintext // the STARTTLS listener before STARTTLS
	)
	token := strings.Repeat("ab", 32)
	tests := []struct {
		name     string
		state    int
		send     string
		exchange []string
		want     []string
		closed   bool
	}{
		{"no tag", preLogin, "\"x\" NOOP\r\n", nil, []string{"* BAD Invalid command: no tag"}, false},
		{"no tag, then a literal", preLogin, "(x {5}\r\n", nil, []string{"* BYE Invalid command: no tag"}, true},
		{"command name quoted", preLogin, "a \"LOGIN\" {5}\r\n", nil, []string{"a BAD Invalid command name"}, false},
		{"command name glued to its arguments", preLogin, "a NOOP(x\r\n", nil, []string{"a BAD Invalid command name"}, false},
		{"command name with NUL", preLogin, "a NO\x00OP\r\n", nil, []string{"a BAD Invalid command name"}, false},
		{"tag in flight", preLogin, "a NOOP\r\na NOOP\r\n", []string{"> a NOOP", "< a OK NOOP completed."},
			[]string{"a OK NOOP completed.", "a BAD Tag a is already in use by a command in progress"}, false},
		{"IDLE before login", preLogin, "a IDLE\r\nx LOGIN bob*master masterpw\r\n", nil,
			[]string{"a BAD IDLE is not valid before login", "x BAD LOGIN expected space"}, false},
		{"CAPABILITY with arguments before login", preLogin, "a CAPABILITY {0}x\r\n", nil, []string{"a BAD CAPABILITY takes no arguments"}, false},
		{"SELECT before login", preLogin, "a SELECT INBOX\r\n", nil, []string{"a BAD SELECT is not valid before login"}, false},
		{"APPEND before login, literal skipped", preLogin, "a APPEND INBOX {16+}\r\nx LOGIN bob pw\r\n\r\n", nil, []string{"a BAD APPEND is not valid before login"}, false},
		{"NOOP with a literal before login", preLogin, "a NOOP {3+}\r\nabc\r\n", nil, []string{"a BAD NOOP takes no arguments"}, false},
		{"XAPPLEPUSHSERVICE before login", preLogin, "a XAPPLEPUSHSERVICE aps-version 2\r\n", nil, []string{"a BAD XAPPLEPUSHSERVICE is only valid after login"}, false},
		{"COMPRESS", preLogin, "a COMPRESS DEFLATE\r\n", nil, []string{"a NO COMPRESS is not available through this proxy"}, false},
		{"UNAUTHENTICATE", loggedIn, "a UNAUTHENTICATE\r\n", nil, []string{"a NO UNAUTHENTICATE is not available through this proxy"}, false},
		{"XCLIENT", preLogin, "a XCLIENT ADDR=6.6.5.5 LOGIN=bob\r\n", nil, []string{"a NO XCLIENT is not available through this proxy"}, false},
		{"ID with x- fields pipelined behind IDLE", preLogin, "a IDLE\r\ni ID (\"x-originating-ip\" \"6.6.5.5\" \"name\" \"evil\")\r\n",
			[]string{`> i ID ("name" "evil")`, "< i OK ID completed."}, []string{"a BAD IDLE is not valid before login", "i OK ID completed."}, false},
		{"LOGIN master-user name", preLogin, "a LOGIN \"bob*master\" masterpw\r\n", nil, []string{`a NO [AUTHENTICATIONFAILED] User names containing "*" are not accepted here`}, false},
		{"LOGIN master-user name in a literal", preLogin, "a LOGIN {10+}\r\nbob*master masterpw\r\n", nil, []string{`a NO [AUTHENTICATIONFAILED] User names containing "*" are not accepted here`}, false},
		{"LOGIN large synchronizing literal", preLogin, "a LOGIN {100000}\r\n", nil, []string{"a BAD LOGIN literal too large: 100000 bytes is over the limit of 8192"}, false},
		{"LOGIN large non-synchronizing literal", preLogin, "a LOGIN {100000+}\r\n", nil, []string{"* BYE Literal too large"}, true},
		{"LOGIN without password", preLogin, "a LOGIN alice\r\n", nil, []string{"a BAD LOGIN expected space"}, false},
		{"LOGIN user with CR", preLogin, "a LOGIN {3+}\r\na\rb pw\r\n", nil, []string{"a BAD User names cannot contain NUL, CR or LF"}, false},
		{"AUTHENTICATE unknown mechanism", preLogin, "a AUTHENTICATE GSSAPI\r\n", nil, []string{"a NO [CANNOT] AUTHENTICATE GSSAPI is not available through this proxy"}, false},
		{"AUTHENTICATE without mechanism", preLogin, "a AUTHENTICATE\r\n", nil, []string{"a BAD AUTHENTICATE expects a mechanism and an optional initial response"}, false},
		{"AUTHENTICATE with a literal", preLogin, "a AUTHENTICATE PLAIN {20+}\r\nAGJvYgBib2JwdwBib2I=\r\n", nil, []string{"a BAD AUTHENTICATE expects a mechanism and an optional initial response"}, false},
		{"AUTHENTICATE bad base64", preLogin, "a AUTHENTICATE PLAIN !!!!\r\n", nil, []string{"a BAD AUTHENTICATE response is not valid base64"}, false},
		{"AUTHENTICATE as another user", preLogin, "a AUTHENTICATE PLAIN " + b64("bob\x00alice\x00secret") + "\r\n", nil, []string{"a NO [AUTHENTICATIONFAILED] Logging in as another user is not accepted here"}, false},
		{"AUTHENTICATE without user", preLogin, "a AUTHENTICATE PLAIN " + b64("\x00\x00secret") + "\r\n", nil, []string{"a NO [AUTHENTICATIONFAILED] PLAIN response has no user name"}, false},
		{"AUTHENTICATE continuation refused", preLogin, "a AUTHENTICATE PLAIN\r\n", []string{"> a AUTHENTICATE PLAIN", "< + ", "~" + b64("bob*master\x00bob*master\x00pw"), "> *", "< a BAD Authentication aborted by client."},
			[]string{"+ ", `a NO [AUTHENTICATIONFAILED] User names containing "*" are not accepted here`}, false},
		{"STARTTLS on TLS", preLogin, "a STARTTLS\r\n", nil, []string{"a BAD TLS is already active"}, false},
		{"line too long", preLogin, "a NOOP " + strings.Repeat("x", maxLineLength) + "\r\n", nil, []string{"* BYE Command line too long"}, true},
		{"LOGIN after login", loggedIn, "a LOGIN bob bobpw\r\n", nil, []string{"a BAD Already logged in"}, false},
		{"AUTHENTICATE after login", loggedIn, "a AUTHENTICATE PLAIN AAAA\r\nx APPEND INBOX {14}\r\n", []string{"> x APPEND INBOX {14}", "< x NO [TRYCREATE] no", "> " + syncTag + " NOOP", "< " + syncTag + " OK NOOP completed."},
			[]string{"a BAD Already logged in", "x NO [TRYCREATE] no"}, false},
		{"IDLE with arguments", loggedIn, "a IDLE now\r\n", nil, []string{"a BAD IDLE takes no arguments"}, false},
		{"IDLE ended by another command", loggedIn, "a IDLE\r\n", []string{"> a IDLE", "< + idling", "~x LOGIN bob bobpw", "> DONE", "< a OK Idle completed."},
			[]string{"+ idling", "a BAD Expected DONE to end IDLE"}, false},
		{"registration, bad version", loggedIn, "r XAPPLEPUSHSERVICE aps-version 3 aps-account-id A aps-device-token " + token + "\r\n", nil,
			[]string{`r BAD XAPPLEPUSHSERVICE aps-version "3" is not supported (1 or 2)`}, false},
		{"registration, token too long", loggedIn, "r XAPPLEPUSHSERVICE aps-version 2 aps-account-id A aps-device-token " + token + "00\r\n", nil,
			[]string{"r BAD XAPPLEPUSHSERVICE aps-device-token must be 64 hex digits"}, false},
		{"LOGIN before STARTTLS", plaintext, "a LOGIN alice secret\r\n", nil, []string{"a " + privacyRequired}, false},
		{"AUTHENTICATE before STARTTLS", plaintext, "a AUTHENTICATE PLAIN " + b64("\x00alice\x00secret") + "\r\n", nil, []string{"a " + privacyRequired}, false},
		{"LOGIN behind IDLE before STARTTLS", plaintext, "a IDLE\r\nx LOGIN alice secret\r\n", nil, []string{"a BAD IDLE is not valid before login", "x " + privacyRequired}, false},
		{"commands pipelined after STARTTLS", plaintext, "a STARTTLS\r\nx LOGIN alice secret\r\n", nil, []string{"* BYE Commands pipelined after STARTTLS"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := startFakeBackend(t)
			env := startProxy(t, b.addr(), func(o *Options) { o.MasterSeparator = "*" })
			var client, backend *lineConn
			if tt.state == plaintext {
				client = env.dialPlain(t)
				backend = b.accept(t, greetingCaps)
				client.readLine()
			} else {
				client, backend = env.session(t, b)
			}
			if tt.state == loggedIn {
				login(t, client, backend, "alice")
			}
			client.sendRaw(tt.send)
			for _, step := range tt.exchange {
				switch step[0] {
				case '>':
					backend.expect(step[2:])
				case '<':
					backend.send(step[2:])
				case '~': // the client sends, once the backend has spoken
					client.expect(tt.want[0])
					tt.want = tt.want[1:]
					client.send(step[1:])
				}
			}
			client.expect(tt.want...)
			if tt.closed {
				client.expectClosed()
				return
			}
			client.send("n NOOP")
			backend.expect("n NOOP")
			backend.send("n OK NOOP completed.")
			client.expect("n OK NOOP completed.")
		})
	}
}
