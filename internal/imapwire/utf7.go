package imapwire

import (
	"encoding/base64"
	"errors"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// mutf7 is the base64 alphabet of modified UTF-7, with ',' for '/'.
var mutf7 = base64.NewEncoding("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,").WithPadding(base64.NoPadding)

var errUTF7 = errors.New("imapwire: invalid modified UTF-7 mailbox name")

// DecodeMailbox converts a mailbox name from modified UTF-7 (RFC 3501
// section 5.1.3, the form clients use unless UTF8=ACCEPT is enabled) to UTF-8.
// A name that is already plain ASCII comes back unchanged.
func DecodeMailbox(name string) (string, error) {
	if !strings.Contains(name, "&") {
		for i := 0; i < len(name); i++ {
			if name[i] >= 0x80 {
				// 8-bit names only occur with UTF8=ACCEPT: already UTF-8.
				if !utf8.ValidString(name) {
					return "", errUTF7
				}
				return name, nil
			}
		}
		return name, nil
	}
	var sb strings.Builder
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c != '&' {
			sb.WriteByte(c)
			continue
		}
		end := strings.IndexByte(name[i+1:], '-')
		if end < 0 {
			return "", errUTF7
		}
		enc := name[i+1 : i+1+end]
		i += end + 1
		if enc == "" {
			sb.WriteByte('&')
			continue
		}
		raw, err := mutf7.DecodeString(enc)
		if err != nil || len(raw)%2 != 0 {
			return "", errUTF7
		}
		units := make([]uint16, len(raw)/2)
		for j := range units {
			units[j] = uint16(raw[2*j])<<8 | uint16(raw[2*j+1])
		}
		for _, r := range utf16.Decode(units) {
			if r == utf8.RuneError {
				return "", errUTF7
			}
			sb.WriteRune(r)
		}
	}
	return sb.String(), nil
}

// EncodeMailbox converts a mailbox name from UTF-8 to modified UTF-7 (RFC
// 3501 section 5.1.3), the form a server that has not enabled UTF8=ACCEPT
// reads: printable ASCII stays as it is ("&" becomes "&-"), every run of
// other characters is "&", their UTF-16 in modified base64, "-". INBOX in
// any case is INBOX.
func EncodeMailbox(name string) string {
	if strings.EqualFold(name, "INBOX") {
		return "INBOX"
	}
	var sb strings.Builder
	for i := 0; i < len(name); {
		c := name[i]
		if c >= 0x20 && c <= 0x7e {
			sb.WriteByte(c)
			if c == '&' {
				sb.WriteByte('-')
			}
			i++
			continue
		}
		start := i
		for i < len(name) && (name[i] < 0x20 || name[i] > 0x7e) {
			i++
		}
		var raw []byte
		for _, r := range name[start:i] { // invalid UTF-8 is U+FFFD
			for _, u := range utf16.Encode([]rune{r}) {
				raw = append(raw, byte(u>>8), byte(u))
			}
		}
		sb.WriteByte('&')
		sb.WriteString(mutf7.EncodeToString(raw))
		sb.WriteByte('-')
	}
	return sb.String()
}
