package proxy

import (
	"strings"

	"github.com/xapsproxy/xapsproxy/internal/imapwire"
)

// forwardID forwards a client's own ID command (RFC 2971) without its "x-"
// fields. Dovecot takes the client's address from those fields when they
// come from a trusted network, which the proxy's address is once
// forward_client_ip is used (and may be for other reasons): a client must
// not be able to claim another address through the proxy. Everything else
// (name, version, os...) goes through.
func (s *session) forwardID(tag string, rest []byte) error {
	// The proxy reads the command itself, so it answers "+" to literals; its
	// continuation request must come after earlier responses.
	if err := s.waitDrained(); err != nil {
		return err
	}
	d := imapwire.NewDecoder(rest, s.cr)
	d.MaxLiteral = maxXAPSLiteral
	d.Budget = maxLineLength
	d.CheckLiteral = s.continueLiteral
	fields, err := parseID(d)
	if err != nil {
		return s.refuseParsed(tag, "ID", d, err)
	}
	var kept []string
	for _, f := range fields {
		if strings.HasPrefix(strings.ToLower(f.key), "x-") || !quotable(f.key) || !quotable(f.value) {
			continue
		}
		v := "NIL"
		if !f.isNil {
			v = imapwire.Quote(f.value)
		}
		kept = append(kept, imapwire.Quote(f.key), v)
	}
	line := tag + " ID NIL\r\n"
	if len(kept) > 0 {
		line = tag + " ID (" + strings.Join(kept, " ") + ")\r\n"
	}
	return s.forward([]byte(line), &command{tag: tag})
}

// idField is one field of an ID command.
type idField struct {
	key, value string
	isNil      bool
}

// parseID reads `SP ( "(" string SP nstring *(SP string SP nstring) ")" / NIL ) CRLF`.
func parseID(d *imapwire.Decoder) ([]idField, error) {
	var fields []idField
	if !d.SP() {
		return nil, d.Err()
	}
	if d.Is('(') {
		d.List(func() bool {
			if len(fields) >= maxIDFields {
				d.Expect(')', "at most 30 fields")
				return false
			}
			k, _, ok := d.NString()
			if !ok || !d.SP() {
				return false
			}
			v, isNil, ok := d.NString()
			fields = append(fields, idField{k, v, isNil})
			return ok
		})
	} else if _, isNil, ok := d.NString(); ok && !isNil {
		return nil, &imapwire.SyntaxError{Msg: "expected a list or NIL"}
	}
	d.CRLF()
	return fields, d.Err()
}

// quotable reports whether s can be sent as a quoted string: printable ASCII.
func quotable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// continueLiteral answers a synchronizing literal of a command the proxy
// reads itself.
func (s *session) continueLiteral(lit imapwire.Literal) error {
	if lit.NonSync {
		return nil
	}
	return s.writeClient("+ Ready for literal data\r\n")
}
