package proxy

import (
	"bytes"
	"strings"

	"github.com/xapsproxy/xapsproxy/internal/imapwire"
)

// capPolicy says how a capability list is changed on its way to the client.
type capPolicy struct {
	startTLS      bool // the client may still upgrade with STARTTLS (offered by the proxy)
	loginDisabled bool // no login before STARTTLS: LOGINDISABLED, no AUTH= (RFC 9051 section 6.2.1)
	xaps          bool // authenticated: XAPPLEPUSHSERVICE is answered by the proxy
	dropCode      bool // the list is stale (backend STARTTLS happened): remove the code
}

// apply edits a list: STARTTLS is the proxy's to offer (and LOGINDISABLED
// its to say before it), XAPPLEPUSHSERVICE the proxy's to answer, COMPRESS
// would hide the stream the proxy must read (RFC 4978), and only the SASL
// mechanisms the proxy can follow are offered.
func (p capPolicy) apply(caps []string) []string {
	out := caps[:0]
	for _, c := range caps {
		u := strings.ToUpper(c)
		switch {
		case u == "STARTTLS", u == "XAPPLEPUSHSERVICE", strings.HasPrefix(u, "COMPRESS="):
			continue
		case u == "UNAUTHENTICATE", u == "XCLIENT":
			// RFC 8437 would take a session back to before login while
			// the proxy still answers XAPPLEPUSHSERVICE for the old
			// user; XCLIENT would let a client claim another address.
			// Both are refused.
			continue
		case strings.HasPrefix(u, "AUTH=") && !saslFollowed(u[len("AUTH="):]):
			// A mechanism the proxy cannot follow is refused (sasl.go).
			continue
		case p.loginDisabled && (u == "LOGINDISABLED" || strings.HasPrefix(u, "AUTH=")):
			continue
		}
		out = append(out, c)
	}
	if p.startTLS {
		out = append(out, "STARTTLS")
	}
	if p.loginDisabled {
		out = append(out, "LOGINDISABLED")
	}
	if p.xaps {
		out = append(out, "XAPPLEPUSHSERVICE")
	}
	return out
}

// editCapabilities applies the session's policy to a response line, and
// notes what the backend offers that the proxy cares about.
func (s *session) editCapabilities(line []byte, stale bool) []byte {
	metadata := false
	for _, f := range strings.Fields(strings.ToUpper(string(line))) {
		f = strings.Trim(f, "[]")
		metadata = metadata || f == "METADATA" || f == "METADATA-SERVER"
	}
	s.mu.Lock()
	s.backendMetadata = metadata
	p := capPolicy{
		startTLS:      !s.clientTLS && !s.authenticated,
		loginDisabled: !s.clientTLS && !s.authenticated && !s.srv.opts.AllowPlaintextAuth,
		xaps:          s.authenticated,
		dropCode:      stale,
	}
	s.mu.Unlock()
	return editCapabilities(line, p)
}

// editCapabilities rewrites the capability list in an untagged CAPABILITY
// response or in a [CAPABILITY ...] response code (greeting, LOGIN and
// AUTHENTICATE completion); any other line is returned unchanged.
func editCapabilities(line []byte, p capPolicy) []byte {
	body := imapwire.TrimCRLF(line)
	tag, rest, ok := bytes.Cut(body, []byte(" "))
	if !ok {
		return line
	}
	if string(tag) == "*" {
		if name, list, _ := bytes.Cut(rest, []byte(" ")); equalFold(string(name), "CAPABILITY") {
			caps := p.apply(strings.Fields(string(list)))
			return []byte("* CAPABILITY " + strings.Join(caps, " ") + "\r\n")
		}
	}
	status, code, ok := bytes.Cut(rest, []byte(" "))
	if !ok || !isStatus(string(status)) || !hasPrefixFold(code, "[CAPABILITY ") {
		return line
	}
	end := bytes.IndexByte(code, ']')
	if end < 0 {
		return line
	}
	text := code[end+1:]
	var out strings.Builder
	out.Write(tag)
	out.WriteByte(' ')
	out.Write(status)
	if p.dropCode {
		out.WriteByte(' ')
		out.Write(bytes.TrimPrefix(text, []byte(" ")))
	} else {
		caps := p.apply(strings.Fields(string(code[len("[CAPABILITY "):end])))
		out.WriteString(" [CAPABILITY " + strings.Join(caps, " ") + "]")
		out.Write(text)
	}
	out.WriteString("\r\n")
	return []byte(out.String())
}

func isStatus(s string) bool {
	for _, st := range []string{"OK", "NO", "BAD", "PREAUTH", "BYE"} {
		if equalFold(s, st) {
			return true
		}
	}
	return false
}

func equalFold(a, b string) bool { return strings.EqualFold(a, b) }

func hasPrefixFold(b []byte, prefix string) bool {
	return len(b) >= len(prefix) && strings.EqualFold(string(b[:len(prefix)]), prefix)
}
