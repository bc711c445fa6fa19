// Package imapwire reads the IMAP protocol as a stream: lines are read or
// copied one at a time, literals are found at the end of a line and copied
// with a known length, and the few commands a program must understand are
// parsed with a small Decoder. Nothing here ever buffers a whole message.
//
// The grammar is RFC 9051 section 9; literal forms are {N} (synchronizing),
// {N+} (RFC 7888 LITERAL+/LITERAL-) and ~{N} / ~{N+} (RFC 3516 BINARY).
package imapwire

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strconv"
)

// ErrLineTooLong is returned when a line exceeds the caller's limit.
var ErrLineTooLong = errors.New("imapwire: line too long")

// Literal describes a literal announced at the end of a line: {N}, {N+},
// or the same with a leading ~ (literal8, which may contain NUL and is copied
// the same way).
type Literal struct {
	Size    int64
	NonSync bool // {N+}: the sender does not wait for a continuation request
}

// maxLiteralDigits bounds the size field: 20 digits would overflow int64.
const maxLiteralDigits = 18

// LiteralSuffix reports whether line (with or without its CRLF) ends with a
// literal header, and returns it.
func LiteralSuffix(line []byte) (Literal, bool) {
	line = TrimCRLF(line)
	n := len(line)
	if n < 3 || line[n-1] != '}' {
		return Literal{}, false
	}
	end := n - 1
	var lit Literal
	if line[end-1] == '+' {
		lit.NonSync = true
		end--
	}
	start := end
	for start > 0 && line[start-1] >= '0' && line[start-1] <= '9' {
		start--
	}
	digits := end - start
	if digits == 0 || digits > maxLiteralDigits || start == 0 || line[start-1] != '{' {
		return Literal{}, false
	}
	size, err := strconv.ParseInt(string(line[start:end]), 10, 64)
	if err != nil {
		return Literal{}, false
	}
	lit.Size = size
	return lit, true
}

// TrimCRLF removes a trailing LF or CRLF.
func TrimCRLF(line []byte) []byte {
	line = bytes.TrimSuffix(line, []byte("\n"))
	return bytes.TrimSuffix(line, []byte("\r"))
}

// ReadLine reads one line including its line ending into buf[:0] (grown as
// needed) and returns it. A line longer than max bytes fails with
// ErrLineTooLong; the stream is then not at a line boundary any more.
func ReadLine(br *bufio.Reader, buf []byte, max int) ([]byte, error) {
	buf = buf[:0]
	for {
		chunk, err := br.ReadSlice('\n')
		if len(buf)+len(chunk) > max {
			return buf, ErrLineTooLong
		}
		buf = append(buf, chunk...)
		switch {
		case err == nil:
			return buf, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF) && len(buf) > 0:
			return buf, io.ErrUnexpectedEOF
		default:
			return buf, err
		}
	}
}

// literalTailLen is enough bytes of a line's end to hold any literal header:
// "~{" + 18 digits + "+}\r\n".
const literalTailLen = 2 + maxLiteralDigits + 4

// CopyLine copies the rest of a line whose beginning (first, possibly a whole
// line) has already been read from br, streaming it to w however long it is.
// It returns the literal announced at the end of the line, if any.
func CopyLine(w io.Writer, br *bufio.Reader, first []byte) (Literal, bool, error) {
	if _, err := w.Write(first); err != nil {
		return Literal{}, false, err
	}
	var tail [literalTailLen]byte
	tailLen := copy(tail[:], lastBytes(first, literalTailLen))
	for len(first) == 0 || first[len(first)-1] != '\n' {
		chunk, err := br.ReadSlice('\n')
		if len(chunk) > 0 {
			if _, werr := w.Write(chunk); werr != nil {
				return Literal{}, false, werr
			}
			tailLen = appendTail(&tail, tailLen, chunk)
			first = chunk
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return Literal{}, false, err
		}
	}
	lit, ok := LiteralSuffix(tail[:tailLen])
	return lit, ok, nil
}

func lastBytes(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// appendTail keeps the last literalTailLen bytes seen in tail.
func appendTail(tail *[literalTailLen]byte, n int, chunk []byte) int {
	if len(chunk) >= literalTailLen {
		return copy(tail[:], chunk[len(chunk)-literalTailLen:])
	}
	keep := literalTailLen - len(chunk)
	if n > keep {
		copy(tail[:], tail[n-keep:n])
		n = keep
	}
	return n + copy(tail[n:], chunk)
}
