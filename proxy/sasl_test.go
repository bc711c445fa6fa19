package proxy

import (
	"encoding/base64"
	"log/slog"
	"strings"
	"testing"
)

func TestSASLIdentities(t *testing.T) {
	t.Parallel()
	tests := []struct {
		mech, resp       string
		authcid, authzid string // want; authcid "" means an error
	}{
		{"PLAIN", "\x00alice\x00pw", "alice", ""},
		{"PLAIN", "bob\x00alice\x00pw", "alice", "bob"},
		{"PLAIN", "alice\x00pw", "", ""},
		{"PLAIN", "\x00\x00pw", "", ""},
		{"PLAIN", "\x00alice\x00p\x00w", "alice", ""}, // NUL in the password is its own business
		{"LOGIN", "alice", "alice", ""},
		{"LOGIN", "", "", ""},
		{"CRAM-MD5", "alice 0123456789abcdef0123456789abcdef", "alice", ""},
		{"CRAM-MD5", "al ice 0123456789abcdef0123456789abcdef", "al ice", ""},
		{"CRAM-MD5", "0123456789abcdef0123456789abcdef", "", ""},
		{"SCRAM-SHA-1", "n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL", "user", ""},
		{"SCRAM-SHA-256", "n,a=bob,n=alice,r=x", "alice", "bob"},
		{"SCRAM-SHA-256", "y,,n=a=3Db=2Cc,r=x", "a=b,c", ""},
		{"SCRAM-SHA-256", "p=tls-unique,,n=alice,r=x", "", ""},
		{"SCRAM-SHA-256", "n,,m=ext,n=alice,r=x", "", ""},
		{"SCRAM-SHA-256", "n,,n=al=2Xice,r=x", "", ""},
		{"SCRAM-SHA-256", "n,,n=,r=x", "", ""},
		{"SCRAM-SHA-256", "n,b=bob,n=alice,r=x", "", ""},
	}
	for _, tt := range tests {
		mech, _ := saslMechanismFor(tt.mech)
		authcid, authzid, err := mech.identify([]byte(tt.resp))
		switch {
		case tt.authcid == "" && err == nil:
			t.Errorf("%s %q: got %q/%q, want an error", tt.mech, tt.resp, authcid, authzid)
		case tt.authcid != "" && (err != nil || authcid != tt.authcid || authzid != tt.authzid):
			t.Errorf("%s %q: got %q/%q (%v), want %q/%q", tt.mech, tt.resp, authcid, authzid, err, tt.authcid, tt.authzid)
		}
	}
	for _, mech := range []string{"GSSAPI", "NTLM", "EXTERNAL", "ANONYMOUS", "SCRAM-SHA-256-PLUS", "XOAUTH2", "OAUTHBEARER", "plain"} {
		if saslFollowed(mech) {
			t.Errorf("%s is followed", mech)
		}
	}
}

// FuzzSASLIdentity: whatever a client sends in the response that names the
// identities, the proxy never crashes, and with master logins off the user
// it would give the session never holds the separator and is the identity
// whose credentials are checked (as the backend names it).
func FuzzSASLIdentity(f *testing.F) {
	mechs := []string{"PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-1", "SCRAM-SHA-256"}
	for i, seed := range []string{
		"\x00alice\x00alicepw", "bob\x00alice\x00pw", "alice\x00alice\x00pw", "alice", "alice 0123456789abcdef0123456789abcdef",
		"n,,n=alice,r=rOprNGfwEbeRWgbNEkqO", "n,a=bob*master,n=alice,r=x", "n,a=alice,n=alice,r=x",
	} {
		f.Add(uint8(i), []byte(seed))
	}
	s := &session{srv: &Server{opts: Options{MasterSeparator: "*"}}, log: slog.New(slog.DiscardHandler)}
	f.Fuzz(func(t *testing.T, m uint8, resp []byte) {
		name := mechs[int(m)%len(mechs)]
		mech, _ := saslMechanismFor(name)
		l := s.saslUser(mech, base64.StdEncoding.EncodeToString(resp))
		user, refusal := l.user, l.refusal
		if refusal != "" {
			return
		}
		authcid, authzid, err := mech.identify(resp)
		if err != nil || authcid == "" {
			t.Fatalf("%s %q: accepted, but identify says %q, %v", name, resp, authcid, err)
		}
		if strings.Contains(user, "*") || strings.ContainsAny(user, "\x00\r\n") {
			t.Fatalf("%s %q: session user %q", name, resp, user)
		}
		if user != s.srv.opts.Backend.CanonicalUser(authcid) || authzid != "" && authzid != authcid {
			t.Fatalf("%s %q: session user %q; authentication identity %q, authorization %q", name, resp, user, authcid, authzid)
		}
	})
}
