package proxy

import (
	"fmt"
	"strings"

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

// handleLogin forwards `tag LOGIN userid password` (RFC 9051 section 6.2.3).
// The proxy reads the whole command itself (answering the client's
// synchronizing literals), checks the user name, and sends the command anew:
// so the name it notes is the one the backend checks, and a name it refuses
// never reaches the backend.
func (s *session) handleLogin(tag string, rest []byte) error {
	if s.plaintextRefused() {
		s.refusedLogin()
		return s.refuse(tag, rest, privacyRequired)
	}
	d := imapwire.NewDecoder(rest, s.cr)
	d.MaxLiteral = maxPreAuthLiteral
	d.Budget = maxLineLength
	d.CheckLiteral = s.continueLiteral
	var user, pass string
	ok := d.SP()
	if ok {
		user, ok = d.AString()
	}
	if ok && d.SP() {
		pass, ok = d.AString()
	}
	if ok {
		d.CRLF()
	}
	if err := d.Err(); err != nil {
		s.refusedLogin()
		return s.refuseParsed(tag, "LOGIN", d, err)
	}
	sessionUser, refusal := s.loginUser(user, "")
	if refusal != "" {
		s.log.Info("login refused", "command", "LOGIN", "reason", refusal)
		s.refusedLogin()
		return s.answer(tag, refusal)
	}
	c := &command{tag: tag, kind: kindLogin, user: sessionUser}
	if s.capturing() && pass != "" && !s.masterLogin(user, "") {
		c.secret = []byte(pass)
	}
	return s.sendCommand(c, "LOGIN", user, pass)
}

// loginUser checks the identities a login names: the one whose credentials
// are given (authcid) and the one to act as (authzid, "" if none). It
// returns the user the session will belong to, as the backend names it
// (backend.username_format), or a refusal.
//
// A name with the master-user separator ("bob*master") or an authzid other
// than the authcid is a master-user login (Dovecot's auth_master_user_
// separator, and SASL authorization), which would let anyone on the
// internet guess the master password: refused unless allow_master_logins.
func (s *session) loginUser(authcid, authzid string) (user, refusal string) {
	if strings.ContainsAny(authcid+authzid, "\x00\r\n") {
		return "", "BAD User names cannot contain NUL, CR or LF"
	}
	sep, allow := s.srv.opts.MasterSeparator, s.srv.opts.AllowMasterLogins
	if s.hasSeparator(authcid, authzid) && !allow {
		return "", fmt.Sprintf("NO [AUTHENTICATIONFAILED] User names containing %q are not accepted here", sep)
	}
	if authzid != "" && authzid != authcid && !allow {
		return "", "NO [AUTHENTICATIONFAILED] Logging in as another user is not accepted here"
	}
	user = authcid
	if authzid != "" {
		user = authzid
	}
	if sep != "" {
		user, _, _ = strings.Cut(user, sep) // the user a master login acts as
	}
	return s.srv.opts.Backend.CanonicalUser(user), ""
}

// sendCommand sends a command the proxy composed: tag, name and astring
// arguments, each an atom or quoted string when it can be, else a literal
// (the backend's "+" for it is the proxy's and goes no further).
func (s *session) sendCommand(c *command, name string, args ...string) error {
	for _, a := range args {
		if !imapwire.IsAtom(a) && !quotable(a) {
			// A literal: nothing else may run while it waits for "+".
			if err := s.waitDrained(); err != nil {
				return err
			}
			break
		}
	}
	if err := s.push(c); err != nil {
		return err
	}
	buf := []byte(c.tag + " " + name)
	defer func() { clear(buf) }() // it may hold a password
	for _, a := range args {
		buf = append(buf, ' ')
		switch {
		case imapwire.IsAtom(a):
			buf = append(buf, a...)
			continue
		case quotable(a):
			buf = append(buf, imapwire.Quote(a)...)
			continue
		}
		buf = fmt.Appendf(buf, "{%d}\r\n", len(a))
		goAhead, err := s.sendAwaiting(c, false, buf)
		clear(buf)
		buf = buf[:0]
		if err != nil {
			return err
		}
		if !goAhead {
			return s.resync()
		}
		if err := s.writeData([]byte(a)); err != nil {
			return err
		}
	}
	buf = append(buf, "\r\n"...)
	_, err := s.bw.Write(buf)
	return err
}
