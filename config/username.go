package config

import "strings"

// Username formats: the subset of Dovecot's auth_username_format variables
// that name a user (%u the whole name, %n its part before "@"), optionally
// lowercased (%Lu, %Ln). Dovecot's default is %Lu.
const DefaultUsernameFormat = "%Lu"

// usernameFormats maps every accepted format to its Dovecot 2.3 form:
// Dovecot 2.4 writes the same four as %{user} with the filters username
// (the part before "@") and lower, in either order; its default is
// %{user | lower}.
var usernameFormats = map[string]string{
	"%u": "%u", "%Lu": "%Lu", "%n": "%n", "%Ln": "%Ln",
	"%{user}":                "%u",
	"%{user|lower}":          "%Lu",
	"%{user|username}":       "%n",
	"%{user|username|lower}": "%Ln",
	"%{user|lower|username}": "%Ln",
}

// usernameFormat returns f in its Dovecot 2.3 form, and whether it is one
// of the accepted formats; spaces inside %{...} do not matter.
func usernameFormat(f string) (string, bool) {
	if strings.HasPrefix(f, "%{") {
		f = strings.ReplaceAll(f, " ", "")
	}
	g, ok := usernameFormats[f]
	return g, ok
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
