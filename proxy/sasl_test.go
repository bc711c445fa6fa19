package proxy

import (
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
		{"XOAUTH2", "user=alice\x01auth=Bearer t\x01\x01", "alice", ""},
		{"XOAUTH2", "auth=Bearer t\x01\x01", "", ""},
		{"OAUTHBEARER", "n,a=alice,\x01auth=Bearer t\x01\x01", "alice", ""},
		{"OAUTHBEARER", "n,,\x01auth=Bearer t\x01\x01", "", ""},
	}
	for _, tt := range tests {
		authcid, authzid, err := saslIdentifier(tt.mech)([]byte(tt.resp))
		switch {
		case tt.authcid == "" && err == nil:
			t.Errorf("%s %q: got %q/%q, want an error", tt.mech, tt.resp, authcid, authzid)
		case tt.authcid != "" && (err != nil || authcid != tt.authcid || authzid != tt.authzid):
			t.Errorf("%s %q: got %q/%q (%v), want %q/%q", tt.mech, tt.resp, authcid, authzid, err, tt.authcid, tt.authzid)
		}
	}
	for _, mech := range []string{"GSSAPI", "NTLM", "EXTERNAL", "ANONYMOUS", "SCRAM-SHA-256-PLUS", "plain"} {
		if saslIdentifier(mech) != nil {
			t.Errorf("%s is followed", mech)
		}
	}
}

// FuzzSASLIdentity: whatever a client sends in the response that names the
// identities, the proxy never crashes, and with master logins off the user
// it would give the session never holds the separator and is the identity
// whose credentials are checked.
func FuzzSASLIdentity(f *testing.F) {
	mechs := []string{"PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-1", "SCRAM-SHA-256", "XOAUTH2", "OAUTHBEARER"}
	for i, seed := range []string{
		"\x00alice\x00alicepw", "bob\x00alice\x00pw", "alice", "alice 0123456789abcdef0123456789abcdef",
		"n,,n=alice,r=rOprNGfwEbeRWgbNEkqO", "n,a=bob*master,n=alice,r=x",
		"user=alice\x01auth=Bearer ya29\x01\x01", "n,a=alice,\x01host=x\x01auth=Bearer t\x01\x01",
	} {
		f.Add(uint8(i), []byte(seed))
	}
	s := &session{srv: &Server{opts: Options{MasterSeparator: "*"}}}
	f.Fuzz(func(t *testing.T, m uint8, resp []byte) {
		mech := mechs[int(m)%len(mechs)]
		authcid, authzid, err := saslIdentifier(mech)(resp)
		if err != nil {
			return
		}
		if authcid == "" {
			t.Fatalf("%s: no error and no user name", mech)
		}
		user, refusal := s.loginUser(authcid, authzid)
		if refusal != "" {
			return
		}
		if strings.Contains(user, "*") || strings.ContainsAny(user, "\x00\r\n") {
			t.Fatalf("%s %q: session user %q", mech, resp, user)
		}
		if user != authcid {
			t.Fatalf("%s %q: session user %q is not the authentication identity %q", mech, resp, user, authcid)
		}
	})
}
