package proxy

import (
	"errors"
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
		var se *imapwire.SyntaxError
		if !errors.As(err, &se) && !errors.Is(err, imapwire.ErrLiteralRefused) {
			return err
		}
		if err := s.discard(d); err != nil {
			return err
		}
		return s.writeClient(tag + " BAD ID " + oneLine(err.Error()) + "\r\n")
	}
	var kept []string
	for i := 0; i+1 < len(fields); i += 2 {
		k, v := fields[i], fields[i+1]
		if strings.HasPrefix(strings.ToLower(k), "x-") || !quotable(k) || !quotable(v) {
			continue
		}
		kept = append(kept, imapwire.Quote(k), imapwire.Quote(v))
	}
	line := tag + " ID NIL\r\n"
	if len(kept) > 0 {
		line = tag + " ID (" + strings.Join(kept, " ") + ")\r\n"
	}
	return s.forward([]byte(line), &command{tag: tag}, nil)
}

// parseID reads `SP ( "(" string SP nstring *(SP string SP nstring) ")" / NIL ) CRLF`;
// a NIL value is returned as "".
func parseID(d *imapwire.Decoder) ([]string, error) {
	var fields []string
	if !d.SP() {
		return nil, d.Err()
	}
	if d.Is('(') {
		d.List(func() bool {
			if len(fields) >= 2*maxIDFields {
				d.Expect(')', "at most 30 fields")
				return false
			}
			k, _, ok := d.NString()
			if !ok || !d.SP() {
				return false
			}
			v, _, ok := d.NString()
			fields = append(fields, k, v)
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
