package config

import (
	"errors"
	"fmt"
	"net"
	"strings"
)

// MinEventsSecretLen is the shortest events secret accepted, in bytes.
const MinEventsSecretLen = 16

const secretHint = "e.g. the output of `openssl rand -hex 32`, the same as xapsproxy_secret in Dovecot"

func (e *Events) validate() error {
	key := "events.secret"
	switch {
	case e.Secret != "" && e.SecretFile != "":
		return keyError(key, "set secret or secret_file, not both")
	case e.SecretFile != "":
		key = "events.secret_file"
		data, err := ReadSecretFile(key, e.SecretFile)
		if err != nil {
			return err
		}
		e.Secret = strings.TrimRight(string(data), "\r\n")
		if e.Secret == "" {
			return &Error{Key: key, Value: e.SecretFile, Err: errors.New("file is empty"),
				Fix: "write the secret in it, on one line: " + secretHint}
		}
	case e.Secret == "":
		return nil // the listener is off
	}
	if err := checkSecret(e.Secret); err != nil {
		e.Secret = ""
		value := ""
		if key == "events.secret_file" {
			value = e.SecretFile
		}
		return &Error{Key: key, Value: value, Err: err, Fix: "use at least 16 letters, digits or -._~+/=, " + secretHint}
	}
	if e.Listen == "" {
		return keyError("events.listen", `required with a secret — e.g. %q; or remove the secret to turn the listener off`, DefaultEventsListen)
	}
	if _, _, err := net.SplitHostPort(e.Listen); err != nil {
		return keyError("events.listen", "%q is not host:port (%v) — e.g. %q", e.Listen, err, DefaultEventsListen)
	}
	return nil
}

// checkSecret refuses a short secret and one that is not an RFC 6750 bearer
// token (letters, digits and -._~+/, then = padding). Those characters
// also come through Dovecot's configuration unchanged, where '#' starts a
// comment and '%' a variable. The error never contains the secret.
func checkSecret(s string) error {
	if len(s) < MinEventsSecretLen {
		return fmt.Errorf("the secret is %d bytes, too short", len(s))
	}
	body := strings.TrimRight(s, "=")
	for i := 0; i < len(body); i++ {
		c := body[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-._~+/", c) >= 0) {
			return fmt.Errorf("the secret has a character other than letters, digits and -._~+/= (byte %d)", i+1)
		}
	}
	return nil
}
