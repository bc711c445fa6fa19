package proxy

import (
	"encoding/base64"
	"strings"
	"testing"

	"github.com/xapsproxy/xapsproxy/internal/dovecottest"
)

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// Master-user logins from clients are refused before they reach the
// backend, unless allowed: otherwise anyone could guess the master password
// from the internet.
func TestMasterUserLoginsRefused(t *testing.T) {
	t.Parallel()
	const sepRefused = `NO [AUTHENTICATIONFAILED] User names containing "*" are not accepted here`
	const asOther = "NO [AUTHENTICATIONFAILED] Logging in as another user is not accepted here"
	tests := []struct {
		name string
		send []string // client lines; the last one is refused
		plus int      // continuation requests the backend makes before the refusal
		want string
	}{
		// '*' is not an atom character (RFC 9051), though Dovecot takes it.
		{"LOGIN unquoted", []string{"l LOGIN bob*master masterpw"}, 0, "l BAD LOGIN expected space"},
		{"LOGIN quoted", []string{`l LOGIN "bob*master" "masterpw"`}, 0, "l " + sepRefused},
		{"PLAIN authzid", []string{"l AUTHENTICATE PLAIN " + b64("bob\x00master\x00masterpw")}, 0, "l " + asOther},
		{"PLAIN authcid with separator", []string{"l AUTHENTICATE PLAIN " + b64("\x00bob*master\x00masterpw")}, 0, "l " + sepRefused},
		{"PLAIN authzid with separator", []string{"l AUTHENTICATE PLAIN " + b64("bob*master\x00bob*master\x00pw")}, 0, "l " + sepRefused},
		{"SCRAM authzid", []string{"l AUTHENTICATE SCRAM-SHA-256 " + b64("n,a=bob,n=master,r=abcdef")}, 0, "l " + asOther},
		{"CRAM-MD5", []string{"l AUTHENTICATE CRAM-MD5", b64("bob*master 0123456789abcdef0123456789abcdef")}, 1, "l " + sepRefused},
		{"LOGIN mechanism", []string{"l AUTHENTICATE LOGIN", b64("bob*master")}, 1, "l " + sepRefused},
		{"SCRAM authzid equal to authcid", []string{"l AUTHENTICATE SCRAM-SHA-1 " + b64("n,a=MASTER,n=MASTER,r=x")}, 0, "l " + asOther},
		{"CRAM-MD5 initial response", []string{"l AUTHENTICATE CRAM-MD5 " + b64("alice 0123456789abcdef0123456789abcdef")}, 0, "l BAD AUTHENTICATE CRAM-MD5 takes no initial response"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			env, client, backend := proxySession(t, func(o *Options) { o.MasterSeparator = "*" })
			client.send(tt.send[0])
			if tt.plus > 0 {
				backend.expectPrefix("l AUTHENTICATE ")
				backend.send("+ ")
				client.expect("+ ")
				client.send(tt.send[1])
				backend.expect("*") // the proxy aborts the exchange
				backend.send("l BAD Authentication aborted by client.")
			}
			client.expect(tt.want)
			client.send("n NOOP")
			backend.expect("n NOOP")
			backend.send("n OK NOOP completed.")
			client.expect("n OK NOOP completed.")
			client.send(v1Line)
			client.expect("tag1 BAD XAPPLEPUSHSERVICE is only valid after login")
			if regs := env.registrations(); len(regs) != 0 {
				t.Fatalf("stored %+v", regs)
			}
		})
	}
}

// With allow_master_logins, such logins go through and the session belongs
// to the user the master logs in as.
func TestMasterUserLoginsAllowed(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ send, forwarded string }{
		{`l LOGIN "bob*master" masterpw`, `l LOGIN "bob*master" masterpw`},
		{"l AUTHENTICATE PLAIN " + b64("bob\x00master\x00masterpw"), "l AUTHENTICATE PLAIN " + b64("bob\x00master\x00masterpw")},
	} {
		env, client, backend := proxySession(t, func(o *Options) { o.MasterSeparator = "*"; o.AllowMasterLogins = true })
		client.send(tt.send)
		backend.expect(tt.forwarded)
		backend.send("l OK Logged in")
		client.expect("l OK Logged in")
		client.send(v1Line)
		client.expect(wantXAPSReply("tag1", "1", `"INBOX"`)...)
		if regs := env.registrations(); len(regs) != 1 || regs[0].User != "bob" {
			t.Fatalf("stored %+v, want one registration for bob", regs)
		}
	}
}

// Against the real Dovecot: a master-user login from a client never reaches
// it, so the master password cannot be tried through the proxy.
func TestDovecotMasterLoginFromClientRefused(t *testing.T) {
	t.Parallel()
	d, env := dovecotProxy(t, dovecottest.Options{}, func(o *Options) { o.MasterSeparator = "*" })
	c := env.greeted(t)
	c.send(`l LOGIN "alice*` + d.MasterUser + `" ` + d.MasterPassword)
	c.expect(`l NO [AUTHENTICATIONFAILED] User names containing "*" are not accepted here`)
	c.send("a AUTHENTICATE PLAIN " + b64("alice\x00"+d.MasterUser+"\x00"+d.MasterPassword))
	c.expect("a NO [AUTHENTICATIONFAILED] Logging in as another user is not accepted here")
	c.send("m LOGIN alice alicepw")
	c.readUntilTagged("m")
	if users := waitLogins(t, d, 1); len(users) != 1 || users[0] != "alice" {
		t.Fatalf("Dovecot logged in %q, want only alice's own login", users)
	}
	if strings.Contains(d.Log(), "*"+d.MasterUser) {
		t.Fatalf("Dovecot saw a master login:\n%s", d.Log())
	}
}

// Every mechanism the proxy allows: the session belongs to the identity the
// exchange named, once the backend accepts it.
func TestSASLMechanisms(t *testing.T) {
	t.Parallel()
	tests := []struct {
		mech string
		ir   string   // initial response, "" for none
		resp []string // responses to the backend's continuation requests
		user string
	}{
		{"PLAIN", b64("\x00alice\x00secret"), nil, "alice"},
		{"PLAIN", "", []string{b64("alice\x00alice\x00secret")}, "alice"},
		{"LOGIN", "", []string{b64("alice"), b64("secret")}, "alice"},
		{"LOGIN", b64("alice"), []string{b64("secret")}, "alice"},
		{"CRAM-MD5", "", []string{b64("alice 0123456789abcdef0123456789abcdef")}, "alice"},
		{"SCRAM-SHA-1", b64("n,,n=alice,r=fyko+d2lbbFgONRv9qkxdawL"), []string{b64("c=biws,r=x,p=y")}, "alice"},
		{"SCRAM-SHA-256", b64("y,,n=al=2Cice,r=rOprNGfwEbeRWgbNEkqO"), []string{b64("c=eSws,r=x,p=y")}, "al,ice"},
	}
	for _, tt := range tests {
		t.Run(tt.mech, func(t *testing.T) {
			t.Parallel()
			env, client, backend := proxySession(t, nil)
			line := "au AUTHENTICATE " + tt.mech
			if tt.ir != "" {
				line += " " + tt.ir
			}
			client.send(line)
			backend.expect(line)
			for _, r := range tt.resp {
				backend.send("+ challenge")
				client.expect("+ challenge")
				client.send(r)
				backend.expect(r)
			}
			backend.send("au OK Logged in")
			client.expect("au OK Logged in")
			client.send(v1Line)
			client.expect(wantXAPSReply("tag1", "1", `"INBOX"`)...)
			if regs := env.registrations(); len(regs) != 1 || regs[0].User != tt.user {
				t.Fatalf("stored %+v, want one registration for %q", regs, tt.user)
			}
		})
	}
}

// Mechanisms the proxy cannot follow are neither offered nor forwarded.
func TestSASLMechanismsFiltered(t *testing.T) {
	t.Parallel()
	b := startFakeBackend(t)
	env := startProxy(t, b.addr(), nil)
	client := env.dialTLS(t)
	backend := b.accept(t, "* OK [CAPABILITY IMAP4rev1 SASL-IR XCLIENT AUTH=PLAIN AUTH=GSSAPI AUTH=SCRAM-SHA-256 AUTH=SCRAM-SHA-256-PLUS AUTH=ANONYMOUS AUTH=EXTERNAL AUTH=XOAUTH2] ready")
	client.expect("* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN AUTH=SCRAM-SHA-256] ready")
	for _, mech := range []string{"GSSAPI", "SCRAM-SHA-256-PLUS", "ANONYMOUS", "EXTERNAL", "NTLM", "XOAUTH2", "OAUTHBEARER"} {
		client.send("a AUTHENTICATE " + mech)
		client.expect("a NO [CANNOT] AUTHENTICATE " + mech + " is not available through this proxy")
	}
	client.send("x XCLIENT ADDR=6.6.5.5")
	client.expect("x NO XCLIENT is not available through this proxy")
	client.send("n NOOP")
	backend.expect("n NOOP")
}

// Once logged in, LOGIN and AUTHENTICATE are the proxy's to answer: the
// session's user never changes.
func TestNoSecondLogin(t *testing.T) {
	t.Parallel()
	env, client, backend := proxySession(t, nil)
	login(t, client, backend, "alice")
	client.send("l2 LOGIN bob bobpw")
	client.expect("l2 BAD Already logged in")
	client.send("a2 AUTHENTICATE PLAIN " + b64("\x00bob\x00bobpw"))
	client.expect("a2 BAD Already logged in")
	client.send(v1Line)
	client.expect(wantXAPSReply("tag1", "1", `"INBOX"`)...)
	if regs := env.registrations(); len(regs) != 1 || regs[0].User != "alice" {
		t.Fatalf("stored %+v", regs)
	}
}
