package proxy

import (
	"bytes"
	"errors"
	"strings"
)

// saslIdentityFunc reads the identities from the first client response of a
// SASL mechanism: the authentication identity (whose credentials are given)
// and the authorization identity ("" if none: the same user).
type saslIdentityFunc func(resp []byte) (authcid, authzid string, err error)

// saslIdentifier returns how to read the identities of mech, or nil if the
// proxy cannot (GSSAPI, NTLM, EXTERNAL, ANONYMOUS, ...): such mechanisms are
// neither offered nor forwarded, as a login the proxy cannot attribute to a
// user could be a master-user login, and gets no push anyway. The -PLUS
// variants of SCRAM bind to the TLS connection, which ends at the proxy, so
// they cannot succeed at the backend.
func saslIdentifier(mech string) saslIdentityFunc {
	switch mech {
	case "PLAIN":
		return plainIdentity
	case "LOGIN":
		return loginIdentity
	case "CRAM-MD5":
		return cramMD5Identity
	case "SCRAM-SHA-1", "SCRAM-SHA-256":
		return scramIdentity
	case "XOAUTH2":
		return xoauth2Identity
	case "OAUTHBEARER":
		return oauthBearerIdentity
	}
	return nil
}

// plainIdentity: authzid NUL authcid NUL passwd (RFC 4616).
func plainIdentity(resp []byte) (string, string, error) {
	parts := bytes.SplitN(resp, []byte{0}, 3)
	if len(parts) != 3 || len(parts[1]) == 0 {
		return "", "", errors.New("PLAIN response has no user name")
	}
	return string(parts[1]), string(parts[0]), nil
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

// xoauth2Identity: "user=" user ^A "auth=Bearer " token ^A ^A (Google's
// XOAUTH2).
func xoauth2Identity(resp []byte) (string, string, error) {
	first, _, _ := bytes.Cut(resp, []byte{1})
	user, ok := bytes.CutPrefix(first, []byte("user="))
	if !ok || len(user) == 0 {
		return "", "", errors.New("XOAUTH2 response has no user name")
	}
	return string(user), "", nil
}

// oauthBearerIdentity: a gs2-header "n,a=user," then key/value pairs (RFC
// 7628). The token carries no name the proxy could read, so the header's
// user is the identity, and required.
func oauthBearerIdentity(resp []byte) (string, string, error) {
	header, _, _ := bytes.Cut(resp, []byte{1})
	fields := strings.Split(string(header), ",")
	if len(fields) < 3 || fields[0] != "n" && fields[0] != "y" {
		return "", "", errors.New("OAUTHBEARER response is malformed")
	}
	a, ok := strings.CutPrefix(fields[1], "a=")
	if !ok || a == "" {
		return "", "", errors.New("OAUTHBEARER response has no user name (a=)")
	}
	user, err := saslname(a)
	if err != nil {
		return "", "", err
	}
	return user, "", nil
}
