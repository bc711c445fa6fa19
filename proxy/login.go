package proxy

import (
	"github.com/xapsproxy/xapsproxy/internal/imapwire"
)

// privacyRequired answers LOGIN and AUTHENTICATE on the STARTTLS listener
// before STARTTLS (RFC 9051 section 6.2.3, RFC 5530 PRIVACYREQUIRED).
const privacyRequired = "NO [PRIVACYREQUIRED] Use STARTTLS before logging in"

// plaintextRefused reports whether logging in must wait for STARTTLS.
func (s *session) plaintextRefused() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.clientTLS && !s.srv.opts.AllowPlaintextAuth
}

// forwardLogin forwards LOGIN unchanged and notes its user name, so that the
// session knows who it is once the backend says OK. The password is read only
// as part of the captured bytes, which are wiped afterwards.
func (s *session) forwardLogin(line []byte, tag string, rest []byte) error {
	if s.plaintextRefused() {
		return s.refuse(tag, rest, privacyRequired)
	}
	c := &command{tag: tag, kind: kindLogin}
	capt := &capture{}
	capt.finish = func(cmd []byte) {
		if capt.overflow {
			return
		}
		user := loginUser(cmd)
		s.mu.Lock()
		c.user = user
		s.mu.Unlock()
	}
	defer capt.wipe()
	return s.forward(line, c, capt)
}

// loginUser parses `tag LOGIN userid password` (RFC 9051 section 6.2.3) and
// returns the user name, or "" if the command is malformed.
func loginUser(cmd []byte) string {
	d := imapwire.NewDecoder(cmd, nil)
	d.MaxLiteral = maxCaptureLength
	if _, ok := d.Tag(); !ok || !d.SP() {
		return ""
	}
	if _, ok := d.Atom(); !ok || !d.SP() {
		return ""
	}
	user, ok := d.AString()
	if !ok || !d.SP() {
		return ""
	}
	if _, ok := d.AString(); !ok || !d.CRLF() {
		return ""
	}
	return user
}
