package proxy

import (
	"crypto/hmac"
	"crypto/md5"
	"encoding/base64"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/xapsproxy/xapsproxy/internal/dovecottest"
)

// CRAM-MD5 is server-first: Dovecot ignores an initial response and sends
// its challenge, so a user named there is not the one whose credentials
// Dovecot checks. The proxy refuses an initial response, and takes the user
// from the response to the challenge.
func TestDovecotCRAMMD5(t *testing.T) {
	t.Parallel()
	_, env := dovecotProxy(t, dovecottest.Options{
		Users:       map[string]string{"alice": "alicepw", "eve": "evepw"},
		ExtraConfig: "auth_mechanisms = plain login cram-md5",
	}, nil)
	c := env.greeted(t)
	c.send("c AUTHENTICATE CRAM-MD5 " + base64.StdEncoding.EncodeToString([]byte("alice 0123456789abcdef0123456789abcdef")))
	c.expect("c BAD AUTHENTICATE CRAM-MD5 takes no initial response")
	c.send("c AUTHENTICATE CRAM-MD5")
	challenge, ok := strings.CutPrefix(c.readLine(), "+ ")
	if !ok {
		t.Fatal("no challenge")
	}
	raw, err := base64.StdEncoding.DecodeString(challenge)
	if err != nil {
		t.Fatal(err)
	}
	mac := hmac.New(md5.New, []byte("evepw"))
	mac.Write(raw)
	c.send(base64.StdEncoding.EncodeToString([]byte("eve " + hex.EncodeToString(mac.Sum(nil)))))
	if got := c.readUntilTagged("c"); !strings.HasPrefix(got, "c OK ") {
		t.Fatalf("AUTHENTICATE: %q", got)
	}
	if got := c.register(); !strings.HasPrefix(got, "a2 OK ") {
		t.Fatalf("registration: %q", got)
	}
	assertRegisteredFor(t, env, "eve")
}

// XOAUTH2 and OAUTHBEARER responses may name the user more than once, and
// Dovecot takes the last name: the proxy does not offer them.
func TestDovecotOAuthNotForwarded(t *testing.T) {
	t.Parallel()
	d, env := dovecotProxy(t, dovecottest.Options{
		Users:       map[string]string{"alice": "alicepw", "eve": "evepw"},
		ExtraConfig: "auth_mechanisms = plain login xoauth2 oauthbearer",
	}, nil)
	c := env.dialTLS(t)
	if g := c.readLine(); strings.Contains(g, "AUTH=XOAUTH2") || strings.Contains(g, "AUTH=OAUTHBEARER") || !strings.Contains(g, "AUTH=PLAIN") {
		t.Fatalf("greeting %q", g)
	}
	for _, tt := range []struct{ mech, resp string }{
		{"XOAUTH2", "user=alice\x01user=eve\x01auth=Bearer evepw\x01\x01"},
		{"OAUTHBEARER", "n,a=alice,a=eve,\x01auth=Bearer evepw\x01\x01"},
	} {
		c.send("c AUTHENTICATE " + tt.mech + " " + base64.StdEncoding.EncodeToString([]byte(tt.resp)))
		c.expect("c NO [CANNOT] AUTHENTICATE " + tt.mech + " is not available through this proxy")
	}
	if users := dovecotLogins(d); len(users) != 0 {
		t.Fatalf("Dovecot logged in %q", users)
	}
}
