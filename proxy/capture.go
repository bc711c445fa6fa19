package proxy

import "strings"

// Passwords for Options.Captured (watch.auth = "captured"). Only LOGIN and
// the SASL mechanisms that send the password itself (PLAIN, LOGIN) have
// one; it is kept on the login's command until the backend's answer, handed
// to Captured if that was OK, and cleared either way.

// capturing reports whether logins' passwords are kept for Captured.
func (s *session) capturing() bool { return s.srv.opts.Captured != nil }

// hasSeparator reports whether either identity has the master-user
// separator in it ("bob*master").
func (s *session) hasSeparator(authcid, authzid string) bool {
	sep := s.srv.opts.MasterSeparator
	return sep != "" && (strings.Contains(authcid, sep) || strings.Contains(authzid, sep))
}

// masterLogin reports whether a login with these identities is a
// master-user login (allowed only with AllowMasterLogins): its password is
// the master's, never captured. authzid is "" when the mechanism has none,
// or names the same user as authcid by the backend's rules.
func (s *session) masterLogin(authcid, authzid string) bool {
	return s.hasSeparator(authcid, authzid) || (authzid != "" && authzid != authcid)
}

// captureLogin hands the password of c, a login the backend has answered,
// to Captured if the backend accepted it, and forgets it. Called on the
// backend reader before the answer goes on to the client: once the client
// is told it is logged in (and so before it can register a device), the
// password has been stored.
func (s *session) captureLogin(c *command) {
	s.mu.Lock()
	secret, ok := c.secret, c.loggedIn
	c.secret = nil
	s.mu.Unlock()
	if secret == nil {
		return
	}
	defer clear(secret)
	if ok {
		s.srv.opts.Captured(c.user, string(secret))
	}
}
