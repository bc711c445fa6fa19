package proxy

import (
	"bytes"
	"encoding/base64"
	"strings"

	"github.com/xapsproxy/xapsproxy/internal/imapwire"
)

// forwardAuthenticate forwards AUTHENTICATE unchanged. For PLAIN (RFC 4616)
// and LOGIN it notes the user name, from the initial response (RFC 4959) or
// from the first continuation line; the lines that follow the command are
// continuation data until the backend completes it.
func (s *session) forwardAuthenticate(line []byte, tag string) error {
	d := imapwire.NewDecoder(line, nil)
	d.Tag()
	d.SP()
	d.Atom()
	var mech, ir string
	if d.SP() {
		mech, _ = d.Atom()
		if d.Special(' ') {
			ir, _ = d.Atom()
		}
	}
	mech = strings.ToUpper(mech)
	s.mu.Lock()
	s.authTags[tag] = saslUser(mech, []byte(ir))
	if ir == "" {
		s.contMode = &contMode{tag: tag, mech: mech}
	}
	s.mu.Unlock()
	return s.forward(line, tag, nil)
}

// saslUser returns the user a SASL client response logs in as: for PLAIN the
// authorization identity if given, else the authentication identity; for
// LOGIN the first response is the user name. It returns "" if unknown.
func saslUser(mech string, resp []byte) string {
	if len(resp) == 0 || bytes.Equal(resp, []byte("=")) || bytes.Equal(resp, []byte("*")) {
		return ""
	}
	raw := make([]byte, base64.StdEncoding.DecodedLen(len(resp)))
	n, err := base64.StdEncoding.Decode(raw, resp)
	defer clear(raw) // may hold a password
	if err != nil {
		return ""
	}
	raw = raw[:n]
	switch mech {
	case "PLAIN":
		parts := bytes.SplitN(raw, []byte{0}, 3)
		if len(parts) != 3 {
			return ""
		}
		if len(parts[0]) > 0 {
			return string(parts[0])
		}
		return string(parts[1])
	case "LOGIN":
		return string(raw)
	}
	return ""
}
