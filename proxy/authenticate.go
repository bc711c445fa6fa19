package proxy

import (
	"encoding/base64"
	"strings"

	"github.com/xapsproxy/xapsproxy/internal/imapwire"
)

// handleAuthenticate forwards `tag AUTHENTICATE mechanism [initial-response]`
// (RFC 9051 section 6.2.2, RFC 4959) and the SASL exchange that follows, one
// client response for each continuation request of the backend's. Only the
// mechanisms whose first client response names the identities (sasl.go) are
// allowed, so that the user the session will belong to is known, and
// checked, before the backend sees it.
func (s *session) handleAuthenticate(tag string, rest []byte) error {
	if s.plaintextRefused() {
		s.refusedLogin()
		return s.refuse(tag, rest, privacyRequired)
	}
	d := imapwire.NewDecoder(rest, nil)
	var name, ir string
	ok := d.SP()
	if ok {
		name, ok = d.Atom()
	}
	hasIR := ok && d.Special(' ')
	if hasIR {
		ir, ok = d.Atom()
	}
	if ok {
		ok = d.CRLF()
	}
	if !ok {
		s.refusedLogin()
		return s.refuse(tag, rest, "BAD AUTHENTICATE expects a mechanism and an optional initial response")
	}
	name = strings.ToUpper(name)
	mech, ok := saslMechanismFor(name)
	if !ok || hasIR && mech.serverFirst {
		s.refusedLogin()
	}
	switch {
	case !ok:
		return s.refuse(tag, rest, "NO [CANNOT] AUTHENTICATE "+name+" is not available through this proxy")
	case hasIR && mech.serverFirst:
		return s.refuse(tag, rest, "BAD AUTHENTICATE "+name+" takes no initial response")
	}
	c := &command{tag: tag, kind: kindAuth}
	identified := false
	// passwordNext: the client's next response is the password, to keep
	// for Captured (the LOGIN mechanism, once the user is named).
	passwordNext := false
	line := tag + " AUTHENTICATE " + name
	if hasIR {
		l := s.saslUser(mech, ir)
		if l.refusal != "" {
			s.refusedLogin()
			return s.answer(tag, l.refusal)
		}
		c.user, c.secret, identified = l.user, l.secret, true
		passwordNext = l.capture && mech.passwordNext
		line += " " + ir
	}
	// Nothing else runs while the exchange waits for "+" (continuation.go).
	if err := s.waitDrained(); err != nil {
		return err
	}
	if err := s.push(c); err != nil {
		return err
	}
	more, err := s.sendAwaiting(c, true, []byte(line+"\r\n"))
	for more && err == nil {
		var resp []byte
		if resp, err = s.readLine(); err != nil {
			break
		}
		body := string(imapwire.TrimCRLF(resp))
		switch {
		case body == "*": // the client cancels
			passwordNext = false
		case !identified:
			l := s.saslUser(mech, body)
			s.mu.Lock()
			c.user, c.secret = l.user, l.secret
			if l.refusal != "" {
				// The backend is asked to abort (RFC 9051: "*") and
				// its answer replaced by the proxy's verdict.
				c.reply = tag + " " + l.refusal
				body = "*"
			}
			s.mu.Unlock()
			identified = true
			passwordNext = l.capture && mech.passwordNext
		case passwordNext:
			passwordNext = false
			if pw, derr := decodeSASL(body); derr == nil && len(pw) > 0 {
				s.mu.Lock()
				c.secret = pw
				s.mu.Unlock()
			}
		}
		more, err = s.sendAwaiting(c, true, []byte(body+"\r\n"))
	}
	return err
}

// saslLogin is what the proxy reads from the SASL response that names the
// identities.
type saslLogin struct {
	user    string // the session's user, as the backend names it
	refusal string // the proxy's answer instead of forwarding, or ""
	// capture: the login's password is for Options.Captured (capturing,
	// and not a master-user login).
	capture bool
	secret  []byte // with capture, the password if this response holds it (PLAIN)
}

// saslUser decodes the client response that names the identities and checks
// them (loginUser).
func (s *session) saslUser(mech saslMechanism, resp string) saslLogin {
	raw, err := decodeSASL(resp)
	defer clear(raw) // it may hold a password
	if err != nil {
		return saslLogin{refusal: "BAD AUTHENTICATE response is not valid base64"}
	}
	var l saslLogin
	authcid, authzid, err := mech.identify(raw)
	if err == nil && authzid == authcid && mech.sameAuthzid {
		authzid = "" // the same user, to the backend
	}
	switch {
	case err != nil:
		l.refusal = "NO [AUTHENTICATIONFAILED] " + err.Error()
	case authzid == "":
		l.user, l.refusal = s.loginUser(authcid, "")
	case !s.srv.opts.AllowMasterLogins:
		l.refusal = "NO [AUTHENTICATIONFAILED] Logging in as another user is not accepted here"
	default:
		l.user, l.refusal = s.loginUser(authcid, authzid)
	}
	if l.refusal != "" {
		s.log.Info("login refused", "command", "AUTHENTICATE", "reason", l.refusal)
		return saslLogin{refusal: l.refusal}
	}
	l.capture = s.capturing() && !s.masterLogin(authcid, authzid)
	if l.capture && mech.password != nil {
		l.secret = mech.password(raw)
	}
	return l
}

// decodeSASL decodes a client response: base64, or "=" for an empty initial
// response (RFC 4959).
func decodeSASL(resp string) ([]byte, error) {
	if resp == "=" {
		return nil, nil
	}
	return base64.StdEncoding.Strict().DecodeString(resp)
}
