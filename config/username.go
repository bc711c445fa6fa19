package config

import "strings"

// Username formats: the subset of Dovecot's auth_username_format variables
// that name a user (%u the whole name, %n its part before "@"), optionally
// lowercased (%Lu, %Ln). Dovecot's default is %Lu.
const DefaultUsernameFormat = "%Lu"

func validUsernameFormat(f string) bool {
	switch f {
	case "%u", "%Lu", "%n", "%Ln":
		return true
	}
	return false
}

// CanonicalUser is the name the backend gives the user who logs in as name,
// by UsernameFormat: the name registrations are stored under and watched
// as, so that "Alice", "ALICE" and (with %n) "alice@example.com" are one
// account, as they are to Dovecot.
func (b Backend) CanonicalUser(name string) string {
	format := b.UsernameFormat
	if format == "" {
		format = DefaultUsernameFormat
	}
	if strings.HasSuffix(format, "n") {
		name, _, _ = strings.Cut(name, "@")
	}
	if strings.HasPrefix(format, "%L") {
		name = lowerASCII(name)
	}
	return name
}

// lowerASCII lowercases A-Z only, byte by byte, as Dovecot's %L does: "Åsa"
// and "åsa" stay two names, as they are two accounts to Dovecot.
func lowerASCII(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}
