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
func (s *session) forwardAuthenticate(line []byte, tag string, rest []byte) error {
	if s.plaintextRefused() {
		return s.refuse(tag, rest, privacyRequired)
	}
	d := imapwire.NewDecoder(rest, nil)
	var mech, ir string
	if d.SP() {
		mech, _ = d.Atom()
		if d.Special(' ') {
			ir, _ = d.Atom()
		}
	}
	mech = strings.ToUpper(mech)
	c := &command{tag: tag, kind: kindAuth, mech: mech, user: saslUser(mech, []byte(ir))}
	return s.forward(line, c, nil)
}

// saslUser returns the user a SASL client response logs in as: for PLAIN the
// authorization identity if given, else the authentication identity; for
// LOGIN the first response is the user name. It returns "" if unknown.
func saslUser(mech string, resp []byte) string {
	if len(resp) == 0 || bytes.Equal(resp, []byte("=")) || bytes.Equal(resp, []byte("*")) {
		return ""
	}
	raw := make([]byte, base64.StdEncoding.DecodedLen(len(resp)))
	defer clear(raw) // may hold a password
	n, err := base64.StdEncoding.Decode(raw, resp)
	if err != nil {
		return ""
	}
	switch mech {
	case "PLAIN":
		parts := bytes.SplitN(raw[:n], []byte{0}, 3)
		if len(parts) != 3 {
			return ""
		}
		if len(parts[0]) > 0 {
			return string(parts[0])
		}
		return string(parts[1])
	case "LOGIN":
		return string(raw[:n])
	}
	return ""
}
