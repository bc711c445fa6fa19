package proxy

import (
	"bytes"
	"errors"
	"strings"
)

// saslMechanism is what the proxy knows of a SASL mechanism it lets clients
// use: how to read the identities from the client's first response, which
// the proxy must know (and check) before the backend sees it.
type saslMechanism struct {
	// identify returns the authentication identity (whose credentials are
	// given) and the authorization identity ("" if none: the same user).
	identify func(resp []byte) (authcid, authzid string, err error)
	// serverFirst: the server sends the first challenge and ignores an
	// initial response (Dovecot's CRAM-MD5), so one is refused: the user
	// is in the response to the challenge.
	serverFirst bool
	// sameAuthzid: the server takes an authorization identity equal to the
	// authentication identity, byte for byte, as the same user (Dovecot's
	// PLAIN). Elsewhere Dovecot compares them after auth_username_format,
	// so any authorization identity may be a master-user login.
	sameAuthzid bool
	// password, if set, returns a copy of the password in the response
	// that names the identities (PLAIN), for Options.Captured.
	password func(resp []byte) []byte
	// passwordNext: the client's next response after the one naming the
	// user is the password (the LOGIN mechanism).
	passwordNext bool
}

// saslMechanismFor returns the mechanism named mech (upper case), or false
// if the proxy cannot follow it (GSSAPI, NTLM, EXTERNAL, ANONYMOUS, OAuth
// ones whose responses can name several users, ...): such mechanisms are
// neither offered nor forwarded, as a login the proxy cannot attribute to a
// user could be a master-user login, and gets no push anyway. The -PLUS
// variants of SCRAM bind to the TLS connection, which ends at the proxy, so
// they cannot succeed at the backend.
func saslMechanismFor(mech string) (saslMechanism, bool) {
	switch mech {
	case "PLAIN":
		return saslMechanism{identify: plainIdentity, sameAuthzid: true, password: plainPassword}, true
	case "LOGIN":
		return saslMechanism{identify: loginIdentity, passwordNext: true}, true
	case "CRAM-MD5":
		return saslMechanism{identify: cramMD5Identity, serverFirst: true}, true
	case "SCRAM-SHA-1", "SCRAM-SHA-256":
		return saslMechanism{identify: scramIdentity}, true
	}
	return saslMechanism{}, false
}

// plainIdentity: authzid NUL authcid NUL passwd (RFC 4616).
func plainIdentity(resp []byte) (string, string, error) {
	parts := bytes.SplitN(resp, []byte{0}, 3)
	if len(parts) != 3 || len(parts[1]) == 0 {
		return "", "", errors.New("PLAIN response has no user name")
	}
	return string(parts[1]), string(parts[0]), nil
}

// plainPassword returns a copy of the passwd of a PLAIN response, nil if
// it has none.
func plainPassword(resp []byte) []byte {
	parts := bytes.SplitN(resp, []byte{0}, 3)
	if len(parts) != 3 || len(parts[2]) == 0 {
		return nil
	}
	return bytes.Clone(parts[2])
}

// loginIdentity: the first response of the LOGIN mechanism is the user name
// (draft-murchison-sasl-login).
func loginIdentity(resp []byte) (string, string, error) {
	if len(resp) == 0 {
		return "", "", errors.New("LOGIN response has no user name")
	}
	return string(resp), "", nil
}

// cramMD5Identity: user SP digest (RFC 2195).
func cramMD5Identity(resp []byte) (string, string, error) {
	i := bytes.LastIndexByte(resp, ' ')
	if i <= 0 {
		return "", "", errors.New("CRAM-MD5 response has no user name")
	}
	return string(resp[:i]), "", nil
}

// scramIdentity reads a client-first-message (RFC 5802 section 7):
// gs2-header ("n" / "y" / "p=cb-name", "," [ "a=" authzid ] ",") then
// "n=" username "," "r=" nonce ...
func scramIdentity(resp []byte) (string, string, error) {
	fields := strings.Split(string(resp), ",")
	if len(fields) < 4 {
		return "", "", errors.New("SCRAM client-first-message is malformed")
	}
	switch {
	case strings.HasPrefix(fields[0], "p="):
		return "", "", errors.New("SCRAM channel binding cannot pass a TLS-terminating proxy")
	case fields[0] != "n" && fields[0] != "y":
		return "", "", errors.New("SCRAM client-first-message is malformed")
	}
	var authzid string
	if fields[1] != "" {
		a, ok := strings.CutPrefix(fields[1], "a=")
		if !ok {
			return "", "", errors.New("SCRAM client-first-message is malformed")
		}
		var err error
		if authzid, err = saslname(a); err != nil {
			return "", "", err
		}
	}
	n, ok := strings.CutPrefix(fields[2], "n=")
	if !ok {
		// Including a reserved "m=" extension, which must fail.
		return "", "", errors.New("SCRAM client-first-message has no user name")
	}
	authcid, err := saslname(n)
	if err != nil || authcid == "" {
		return "", "", errors.New("SCRAM client-first-message has no valid user name")
	}
	return authcid, authzid, nil
}

// saslname decodes RFC 5802's escapes: "=2C" is ",", "=3D" is "=".
func saslname(s string) (string, error) {
	var sb strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '=' {
			sb.WriteByte(s[i])
			continue
		}
		switch {
		case strings.HasPrefix(s[i:], "=2C"):
			sb.WriteByte(',')
		case strings.HasPrefix(s[i:], "=3D"):
			sb.WriteByte('=')
		default:
			return "", errors.New("SCRAM user name has a bad escape")
		}
		i += 2
	}
	return sb.String(), nil
}

// saslFollowed reports whether the proxy lets clients use mech.
func saslFollowed(mech string) bool {
	_, ok := saslMechanismFor(mech)
	return ok
}
