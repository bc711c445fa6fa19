package imapwire

import (
	"errors"
	"strconv"
)

// ScanCommandLine checks one line of a command a client sent (its first
// line, or a line that follows literal data) the way an IMAP server's parser
// will read it, and returns the literal it announces at its end, if any.
//
// A server starts a literal at any "{" outside a quoted string, and Dovecot
// asks for its data ("+") as soon as it has read the "}", before it checks
// that the line ends there. So a line is only safe to forward when its one
// literal header, if any, is the last thing on it: a "{" anywhere else
// outside a quoted string, a malformed header ("{}", "{+}", "{12x}") or an
// unterminated quoted string fails with a *SyntaxError. Quoted strings
// follow RFC 9051 and Dovecot: a backslash takes the next byte, whatever it
// is, but never a line end.
func ScanCommandLine(line []byte) (Literal, bool, error) {
	body := TrimCRLF(line)
	quoted := false
	for i := 0; i < len(body); i++ {
		c := body[i]
		switch {
		case quoted && c == '\\':
			if i+1 == len(body) {
				return Literal{}, false, errUnterminated
			}
			i++
		case c == '\r' || c == '\n':
			if quoted {
				return Literal{}, false, errUnterminated
			}
		case c == '"':
			quoted = !quoted
		case c == '{' && !quoted:
			lit, err := literalHeader(body[i:])
			return lit, err == nil, err
		}
	}
	if quoted {
		return Literal{}, false, errUnterminated
	}
	return Literal{}, false, nil
}

var errUnterminated = &SyntaxError{Msg: "unterminated quoted string"}

// literalHeader parses h, which starts with "{" and must be a whole literal
// header with nothing after it: "{" 1*DIGIT ["+"] "}".
func literalHeader(h []byte) (Literal, error) {
	n := len(h)
	if n < 2 || h[n-1] != '}' {
		return Literal{}, &SyntaxError{Msg: "literal header not at the end of the line"}
	}
	digits := h[1 : n-1]
	var lit Literal
	if len(digits) > 0 && digits[len(digits)-1] == '+' {
		lit.NonSync = true
		digits = digits[:len(digits)-1]
	}
	if len(digits) == 0 {
		return Literal{}, &SyntaxError{Msg: "literal header without a size"}
	}
	for _, d := range digits {
		if d < '0' || d > '9' {
			return Literal{}, &SyntaxError{Msg: "literal header not at the end of the line"}
		}
	}
	size, err := strconv.ParseInt(string(digits), 10, 64)
	if err != nil {
		var ne *strconv.NumError
		if errors.As(err, &ne) && errors.Is(ne.Err, strconv.ErrRange) {
			return Literal{}, &SyntaxError{Msg: "literal size too large"}
		}
		return Literal{}, &SyntaxError{Msg: "bad literal size"}
	}
	lit.Size = size
	return lit, nil
}
