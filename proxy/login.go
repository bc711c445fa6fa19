package proxy

import (
	"github.com/xapsproxy/xapsproxy/internal/imapwire"
)

// forwardLogin forwards LOGIN unchanged and notes its user name, so that the
// session knows who it is once the backend says OK. The password is read only
// as part of the captured bytes, which are wiped afterwards.
func (s *session) forwardLogin(line []byte, tag string) error {
	c := &capture{}
	c.finish = func(cmd []byte) {
		user := ""
		if !c.overflow {
			user = loginUser(cmd)
		}
		s.mu.Lock()
		s.authTags[tag] = user
		s.mu.Unlock()
	}
	defer c.wipe()
	return s.forward(line, tag, c)
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
