package imapnotify

import (
	"bufio"
	"bytes"
	"errors"
	"io"

	"github.com/xapsproxy/xapsproxy/internal/imapwire"
)

// tailLen is enough of a line's end to hold any literal header.
const tailLen = 24

// readWhole reads one server response from br and appends it to buf: its
// first line and, while a line ends in a literal header, the literal's data
// and the line after it. Status responses (OK, NO, BAD, BYE, PREAUTH, and
// continuation requests) end in free text and are never read as announcing
// a literal. Past max bytes the rest is read and dropped, and tooLong is
// set; what was kept is returned.
func readWhole(br *bufio.Reader, buf []byte, max int) (_ []byte, tooLong bool, err error) {
	first := true
	for {
		start := len(buf)
		var tail [tailLen]byte
		var n int
		buf, n, err = readLine(br, buf, max, &tail)
		if err != nil {
			return buf, tooLong, err
		}
		if len(buf)-start < n {
			tooLong = true
		}
		if first && isStatusLine(buf[start:]) {
			return buf, tooLong, nil
		}
		first = false
		lit, ok := imapwire.LiteralSuffix(tail[:min(n, tailLen)])
		if !ok {
			return buf, tooLong, nil
		}
		if !tooLong && int64(max-len(buf)) >= lit.Size {
			size := int(lit.Size)
			buf = slicesGrow(buf, size)
			if _, err := io.ReadFull(br, buf[len(buf):len(buf)+size]); err != nil {
				return buf, tooLong, err
			}
			buf = buf[:len(buf)+size]
			continue
		}
		tooLong = true
		for left := lit.Size; left > 0; {
			chunk := int(min(left, 1<<20))
			d, err := br.Discard(chunk)
			left -= int64(d)
			if err != nil {
				return buf, tooLong, err
			}
		}
	}
}

func slicesGrow(b []byte, n int) []byte {
	if cap(b)-len(b) >= n {
		return b
	}
	nb := make([]byte, len(b), len(b)+n)
	copy(nb, b)
	return nb
}

// readLine appends one line (with its CRLF) to buf while buf stays within
// max bytes, and drops the rest of a longer one. It returns the line's full
// length and leaves its last bytes in tail (the last min(n, tailLen) of
// them, in order).
func readLine(br *bufio.Reader, buf []byte, max int, tail *[tailLen]byte) ([]byte, int, error) {
	n, t := 0, 0
	for {
		chunk, err := br.ReadSlice('\n')
		n += len(chunk)
		if room := max - len(buf); room > 0 {
			buf = append(buf, chunk[:min(room, len(chunk))]...)
		}
		t = keepTail(tail, t, chunk)
		switch {
		case err == nil:
			return buf, n, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF) && n > 0:
			return buf, n, io.ErrUnexpectedEOF
		default:
			return buf, n, err
		}
	}
}

// keepTail keeps the last tailLen bytes seen in tail, t of which are set.
func keepTail(tail *[tailLen]byte, t int, chunk []byte) int {
	if len(chunk) >= tailLen {
		return copy(tail[:], chunk[len(chunk)-tailLen:])
	}
	if keep := tailLen - len(chunk); t > keep {
		copy(tail[:], tail[t-keep:t])
		t = keep
	}
	return t + copy(tail[t:], chunk)
}

// isStatusLine reports whether line is a continuation request or a status
// response (tagged or untagged OK, NO, BAD, BYE, PREAUTH).
func isStatusLine(line []byte) bool {
	if len(line) > 0 && line[0] == '+' {
		return true
	}
	_, rest, ok := bytes.Cut(line, []byte(" "))
	if !ok {
		return false
	}
	word := rest
	if i := bytes.IndexAny(rest, " \r\n"); i >= 0 {
		word = rest[:i]
	}
	for _, s := range []string{"OK", "NO", "BAD", "BYE", "PREAUTH"} {
		if bytes.EqualFold(word, []byte(s)) {
			return true
		}
	}
	return false
}
