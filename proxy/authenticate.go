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
		return s.refuse(tag, rest, "BAD AUTHENTICATE expects a mechanism and an optional initial response")
	}
	name = strings.ToUpper(name)
	mech, ok := saslMechanismFor(name)
	switch {
	case !ok:
		return s.refuse(tag, rest, "NO [CANNOT] AUTHENTICATE "+name+" is not available through this proxy")
	case hasIR && mech.serverFirst:
		return s.refuse(tag, rest, "BAD AUTHENTICATE "+name+" takes no initial response")
	}
	c := &command{tag: tag, kind: kindAuth}
	identified := false
	line := tag + " AUTHENTICATE " + name
	if hasIR {
		user, refusal := s.saslUser(mech, ir)
		if refusal != "" {
			return s.answer(tag, refusal)
		}
		c.user, identified = user, true
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
		if err != nil {
			return err
		}
		body := string(imapwire.TrimCRLF(resp))
		if !identified && body != "*" {
			user, refusal := s.saslUser(mech, body)
			s.mu.Lock()
			c.user = user
			if refusal != "" {
				// The backend is asked to abort (RFC 9051: "*") and
				// its answer replaced by the proxy's verdict.
				c.reply = tag + " " + refusal
				body = "*"
			}
			s.mu.Unlock()
			identified = true
		}
		more, err = s.sendAwaiting(c, true, []byte(body+"\r\n"))
	}
	return err
}

// saslUser decodes the client response that names the identities and checks
// them (loginUser). It returns the session's user, or a refusal.
func (s *session) saslUser(mech saslMechanism, resp string) (user, refusal string) {
	raw, err := decodeSASL(resp)
	defer clear(raw) // it may hold a password
	if err != nil {
		return "", "BAD AUTHENTICATE response is not valid base64"
	}
	authcid, authzid, err := mech.identify(raw)
	switch {
	case err != nil:
		refusal = "NO [AUTHENTICATIONFAILED] " + err.Error()
	case authzid == authcid && mech.sameAuthzid:
		user, refusal = s.loginUser(authcid, "")
	case authzid != "" && !s.srv.opts.AllowMasterLogins:
		refusal = "NO [AUTHENTICATIONFAILED] Logging in as another user is not accepted here"
	default:
		user, refusal = s.loginUser(authcid, authzid)
	}
	if refusal != "" {
		s.log.Info("login refused", "command", "AUTHENTICATE", "reason", refusal)
	}
	return user, refusal
}

// decodeSASL decodes a client response: base64, or "=" for an empty initial
// response (RFC 4959).
func decodeSASL(resp string) ([]byte, error) {
	if resp == "=" {
		return nil, nil
	}
	return base64.StdEncoding.Strict().DecodeString(resp)
}
