package imapwire

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// SyntaxError is a malformed command or response; its message is fit to be
// sent back in a BAD response.
type SyntaxError struct{ Msg string }

func (e *SyntaxError) Error() string { return e.Msg }

// ErrLiteralRefused is returned by a CheckLiteral hook that turned a literal
// down; for a synchronizing literal the peer then sends no data.
var ErrLiteralRefused = errors.New("imapwire: literal refused")

// Decoder parses IMAP syntax from bytes already read (the start of a line)
// followed by a buffered stream. Methods report success with a bool; the first
// failure is kept and returned by Err, and every later call fails.
type Decoder struct {
	pre []byte
	br  *bufio.Reader // nil: only pre is parsed

	// CheckLiteral, if set, is called with each literal header before its data
	// is read. It must send the continuation request for a synchronizing
	// literal, or return an error (such as ErrLiteralRefused) to stop.
	CheckLiteral func(Literal) error
	// MaxLiteral bounds the data of one literal; zero means 64 KiB.
	MaxLiteral int64
	// Budget bounds the bytes parsed outside literal data, over all lines of
	// the command; zero means no bound (the caller limits the input).
	Budget int

	err     error
	used    int      // bytes parsed outside literal data
	refused *Literal // a literal whose data was not read
}

const defaultMaxLiteral = 64 << 10

// NewDecoder returns a decoder reading pre, then br (which may be nil).
func NewDecoder(pre []byte, br *bufio.Reader) *Decoder {
	return &Decoder{pre: pre, br: br}
}

// Err returns the first error met, or nil.
func (d *Decoder) Err() error { return d.err }

func (d *Decoder) fail(format string, args ...any) bool {
	if d.err == nil {
		d.err = &SyntaxError{Msg: fmt.Sprintf(format, args...)}
	}
	return false
}

func (d *Decoder) setErr(err error) bool {
	if d.err == nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		d.err = err
	}
	return false
}

func (d *Decoder) peek() (byte, bool) {
	if d.err != nil {
		return 0, false
	}
	if len(d.pre) > 0 {
		return d.pre[0], true
	}
	if d.br == nil {
		return 0, d.setErr(io.ErrUnexpectedEOF)
	}
	b, err := d.br.Peek(1)
	if err != nil {
		return 0, d.setErr(err)
	}
	return b[0], true
}

func (d *Decoder) next() (byte, bool) {
	b, ok := d.peek()
	if !ok {
		return 0, false
	}
	if d.Budget > 0 && d.used >= d.Budget {
		return 0, d.fail("command too long")
	}
	d.used++
	if len(d.pre) > 0 {
		d.pre = d.pre[1:]
	} else {
		d.br.ReadByte() // cannot fail after a successful Peek
	}
	return b, true
}

// Special reads the byte c and reports whether it was there; it does not fail
// the decoder when the byte is absent.
func (d *Decoder) Special(c byte) bool {
	if b, ok := d.peek(); ok && b == c {
		d.next()
		return true
	}
	return false
}

// Is reports whether the next byte is c, without reading it.
func (d *Decoder) Is(c byte) bool {
	b, ok := d.peek()
	return ok && b == c
}

// Expect reads the byte c or fails with a message naming what was wanted.
func (d *Decoder) Expect(c byte, what string) bool {
	if d.Special(c) {
		return true
	}
	if d.err != nil {
		return false
	}
	return d.fail("expected %s", what)
}

// SP reads one space.
func (d *Decoder) SP() bool { return d.Expect(' ', "space") }

// CRLF reads the end of the line; a bare LF is accepted, as most servers do.
func (d *Decoder) CRLF() bool {
	d.Special('\r')
	return d.Expect('\n', "end of line")
}

// AtEOL reports whether the next byte ends the line.
func (d *Decoder) AtEOL() bool {
	b, ok := d.peek()
	return ok && (b == '\r' || b == '\n')
}

// isAtomChar: RFC 9051 ATOM-CHAR, any CHAR except atom-specials.
func isAtomChar(b byte) bool {
	if b <= 0x1f || b >= 0x7f {
		return false
	}
	switch b {
	case '(', ')', '{', ' ', '%', '*', '"', '\\', ']':
		return false
	}
	return true
}

// readWhile reads bytes satisfying ok; it fails with what if there are none.
func (d *Decoder) readWhile(ok func(byte) bool, what string) (string, bool) {
	var sb strings.Builder
	for {
		b, more := d.peek()
		if !more || !ok(b) {
			break
		}
		d.next()
		sb.WriteByte(b)
	}
	if d.err != nil {
		return "", false
	}
	if sb.Len() == 0 {
		return "", d.fail("expected %s", what)
	}
	return sb.String(), true
}

// Atom reads an atom.
func (d *Decoder) Atom() (string, bool) { return d.readWhile(isAtomChar, "atom") }

// Tag reads a command tag: astring characters except '+' (RFC 9051 "tag").
func (d *Decoder) Tag() (string, bool) {
	return d.readWhile(func(b byte) bool { return (isAtomChar(b) || b == ']') && b != '+' }, "tag")
}

// AString reads an atom, a quoted string or a literal. (A literal8, ~{N},
// is not an astring: RFC 3516 allows it only for message data.)
func (d *Decoder) AString() (string, bool) {
	b, ok := d.peek()
	switch {
	case !ok:
		return "", false
	case b == '"':
		return d.quoted()
	case b == '{':
		return d.literal()
	}
	return d.readWhile(func(b byte) bool { return isAtomChar(b) || b == ']' }, "string")
}

// NString reads an astring or NIL; isNil reports the latter. A quoted "NIL"
// is a string, not NIL.
func (d *Decoder) NString() (s string, isNil bool, ok bool) {
	if b, ok := d.peek(); ok && b != '"' && b != '{' {
		s, ok := d.AString()
		return s, ok && strings.EqualFold(s, "NIL"), ok
	}
	s, ok = d.AString()
	return s, false, ok
}

func (d *Decoder) quoted() (string, bool) {
	d.next() // opening quote
	var sb strings.Builder
	for {
		b, ok := d.peek()
		if !ok {
			return "", false
		}
		if b == '\r' || b == '\n' {
			// Left unread so that Discard finds the end of the line.
			return "", d.fail("unterminated quoted string")
		}
		d.next()
		switch b {
		case '"':
			return sb.String(), true
		case '\\':
			if b, ok = d.peek(); !ok {
				return "", false
			}
			if b != '"' && b != '\\' {
				return "", d.fail("bad escape in quoted string")
			}
			d.next()
		}
		sb.WriteByte(b)
	}
}

func (d *Decoder) literal() (string, bool) {
	var lit Literal
	if !d.Expect('{', "literal") {
		return "", false
	}
	digits, ok := d.readWhile(func(b byte) bool { return b >= '0' && b <= '9' }, "literal size")
	if !ok {
		return "", false
	}
	size, err := strconv.ParseInt(digits, 10, 64)
	if err != nil || len(digits) > maxLiteralDigits {
		return "", d.fail("bad literal size")
	}
	lit.Size = size
	lit.NonSync = d.Special('+')
	if !d.Expect('}', "}") || !d.CRLF() {
		return "", false
	}
	max := d.MaxLiteral
	if max == 0 {
		max = defaultMaxLiteral
	}
	if lit.Size > max {
		d.refused = &lit
		return "", d.setErr(fmt.Errorf("%w: %d bytes is over the limit of %d", ErrLiteralRefused, lit.Size, max))
	}
	if d.CheckLiteral != nil {
		if err := d.CheckLiteral(lit); err != nil {
			d.refused = &lit
			return "", d.setErr(err)
		}
	}
	buf := make([]byte, lit.Size)
	n := copy(buf, d.pre)
	d.pre = d.pre[n:]
	if n < len(buf) {
		if d.br == nil {
			return "", d.setErr(io.ErrUnexpectedEOF)
		}
		if _, err := io.ReadFull(d.br, buf[n:]); err != nil {
			return "", d.setErr(err)
		}
	}
	return string(buf), true
}

// List reads a parenthesised list, calling item for each element. An empty
// list is allowed.
func (d *Decoder) List(item func() bool) bool {
	if !d.Expect('(', "(") {
		return false
	}
	if d.Special(')') {
		return true
	}
	for {
		if !item() {
			return false
		}
		if d.Special(')') {
			return true
		}
		if !d.SP() {
			return false
		}
	}
}

// Rest returns what is left of the current line in pre, without reading
// further; it is for inspecting a line already read whole.
func (d *Decoder) Rest() []byte { return d.pre }

// Discard skips the rest of a command after a failure so the stream is at the
// next command again. Literal data is read and dropped when the peer sends it
// unasked (non-synchronizing) and is at most max bytes; awaiting reports that
// the command ended in a synchronizing literal the peer will not send now
// that it gets a tagged response instead of a continuation request (RFC 9051
// section 7.5). Any other error means the stream cannot be resynchronised.
func (d *Decoder) Discard(max int64) (awaiting bool, err error) {
	if d.err != nil && !isSyntaxOrRefused(d.err) {
		return false, d.err
	}
	lit := d.refused
	if lit == nil {
		line := d.pre
		d.pre = nil
		if len(line) == 0 || line[len(line)-1] != '\n' {
			if d.br == nil {
				return false, io.ErrUnexpectedEOF
			}
			rest, err := ReadLine(d.br, nil, int(max))
			if err != nil {
				return false, err
			}
			line = append(line, rest...)
		}
		l, ok := LiteralSuffix(line)
		if !ok {
			return false, nil
		}
		lit = &l
	}
	for {
		if !lit.NonSync {
			return true, nil
		}
		if lit.Size > max || d.br == nil {
			return false, fmt.Errorf("%w: %d bytes cannot be skipped", ErrLiteralRefused, lit.Size)
		}
		if _, err := d.br.Discard(int(lit.Size)); err != nil {
			return false, err
		}
		line, err := ReadLine(d.br, nil, int(max))
		if err != nil {
			return false, err
		}
		l, ok := LiteralSuffix(line)
		if !ok {
			return false, nil
		}
		lit = &l
	}
}

func isSyntaxOrRefused(err error) bool {
	var se *SyntaxError
	return errors.As(err, &se) || errors.Is(err, ErrLiteralRefused)
}
