package imapwire

import (
	"strconv"
	"strings"
)

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

// String returns s as an IMAP string a server may send in a response: a
// quoted string when every byte is printable ASCII, else a literal
// ("{n}\r\n" and the bytes), which carries any bytes, 8-bit (a UTF-8
// mailbox name) and control characters included, to IMAP4rev1 clients too.
func String(s string) string {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return "{" + strconv.Itoa(len(s)) + "}\r\n" + s
		}
	}
	return Quote(s)
}
