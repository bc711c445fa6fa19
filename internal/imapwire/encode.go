package imapwire

import "strings"

// Quote returns s as an IMAP quoted string. It must not contain CR, LF or NUL.
func Quote(s string) string {
	var sb strings.Builder
	sb.Grow(len(s) + 2)
	sb.WriteByte('"')
	for i := 0; i < len(s); i++ {
		if s[i] == '"' || s[i] == '\\' {
			sb.WriteByte('\\')
		}
		sb.WriteByte(s[i])
	}
	sb.WriteByte('"')
	return sb.String()
}

// IsAtom reports whether s can be sent as an atom in an astring: it is not
// empty and every byte is an ASTRING-CHAR (RFC 9051).
func IsAtom(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isAtomChar(s[i]) && s[i] != ']' {
			return false
		}
	}
	return true
}
