package proxy

import (
	"strings"

	"github.com/xapsproxy/xapsproxy/internal/imapwire"
)

// handleSetMetadata forwards `tag SETMETADATA mailbox (entry value ...)`
// (RFC 5464) only when every entry name is one Dovecot takes. Dovecot
// 2.3.19-2.3.21 answers an entry name outside /private and /shared with BAD
// at once, goes on parsing, and on a second error in the same command
// panics (an assertion in its imap process): repeated, the crashes make
// Dovecot throttle its imap service for every user. So the proxy reads the
// command itself: a backend without METADATA gets none, and values must be
// quoted strings (or NIL), not literals, so that the whole command is on
// its line.
func (s *session) handleSetMetadata(line []byte, tag string, rest []byte) error {
	s.mu.Lock()
	metadata := s.backendMetadata
	s.mu.Unlock()
	if !metadata {
		return s.refuse(tag, line, "NO [CANNOT] SETMETADATA: the server does not offer METADATA")
	}
	if _, hasLit, err := imapwire.ScanCommandLine(line); err != nil || hasLit {
		return s.refuse(tag, line, "BAD SETMETADATA values must be quoted strings or NIL through this proxy")
	}
	d := imapwire.NewDecoder(rest, nil)
	badEntry := false
	ok := d.SP()
	if ok {
		_, ok = d.AString()
	}
	ok = ok && d.SP() && d.List(func() bool {
		entry, ok := d.AString()
		if ok && !validMetadataEntry(entry) {
			badEntry = true
			return false
		}
		if !ok || !d.SP() {
			return false
		}
		_, _, ok = d.NString()
		return ok
	}) && d.CRLF()
	switch {
	case badEntry:
		return s.refuse(tag, line, "BAD SETMETADATA entry names must be under /private/ or /shared/")
	case !ok:
		return s.refuse(tag, line, "BAD SETMETADATA "+oneLine(d.Err().Error()))
	}
	return s.forward(line, &command{tag: tag})
}

// validMetadataEntry reports whether Dovecot takes an entry name (RFC 5464
// section 3.2, as Dovecot checks it): under /private/ or /shared/, printable
// ASCII without the list wildcards, no empty component, no trailing "/".
func validMetadataEntry(e string) bool {
	lower := strings.ToLower(e)
	if !strings.HasPrefix(lower, "/private/") && !strings.HasPrefix(lower, "/shared/") {
		return false
	}
	if strings.Contains(e, "//") || strings.HasSuffix(e, "/") {
		return false
	}
	for i := 0; i < len(e); i++ {
		if e[i] < 0x21 || e[i] > 0x7e || e[i] == '*' || e[i] == '%' {
			return false
		}
	}
	return true
}
