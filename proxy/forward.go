package proxy

import (
	"bytes"
	"io"

	"github.com/xapsproxy/xapsproxy/internal/imapwire"
)

// forward sends command c to the backend. line is its first line; literals
// and the lines after them are streamed from the client as they come.
//
// Every line must pass imapwire.ScanCommandLine: a first line that does not
// is refused, a later one (part of the command is with the backend already)
// ends the session. Toward the backend every literal is synchronizing: a
// non-synchronizing {N+} from the client goes on as {N}, and the data follows
// only once the backend asked for it (continuation.go). A backend that
// refuses the command instead (a syntax it reads otherwise, a literal too
// large, no LITERAL+) then never sees the data, which it would otherwise take
// for commands. The client, which sent the data unasked, has it skipped. A
// synchronizing literal of the client's gets the backend's "+", or the
// completion, and the client sends no data then.
func (s *session) forward(line []byte, c *command) error {
	lit, hasLit, err := imapwire.ScanCommandLine(line)
	if err != nil {
		return s.refuse(c.tag, line, "BAD "+oneLine(err.Error()))
	}
	if hasLit {
		// Nothing else runs while the command waits for "+".
		if err := s.waitDrained(); err != nil {
			return err
		}
	}
	if err := s.push(c); err != nil {
		return err
	}
	for hasLit {
		goAhead, err := s.sendAwaiting(c, !lit.NonSync, synchronizing(line, lit))
		if err != nil {
			return err
		}
		if !goAhead {
			if err := s.resync(); err != nil {
				return err
			}
			if lit.NonSync {
				return s.skipCommand(lit)
			}
			return nil
		}
		if line, err = s.sendLiteral(lit); err != nil {
			return err
		}
		if lit, hasLit, err = imapwire.ScanCommandLine(line); err != nil {
			s.bye("Invalid command: " + err.Error())
			return errBadInput
		}
	}
	_, err = s.bw.Write(line)
	return err // clientLoop flushes, unless the next command is here
}

// synchronizing returns line with a non-synchronizing literal header at its
// end made synchronizing ({N+} becomes {N}), in place.
func synchronizing(line []byte, lit imapwire.Literal) []byte {
	if !lit.NonSync {
		return line
	}
	plus := len(imapwire.TrimCRLF(line)) - 2 // "+}"
	copy(line[plus:], line[plus+1:])
	return line[:len(line)-1]
}

// sendLiteral copies the data of a literal the backend asked for from the
// client to the backend, and returns the line that follows it.
func (s *session) sendLiteral(lit imapwire.Literal) ([]byte, error) {
	last := min(lit.Size, 1)
	err := s.copyLiteral(&s.bw, lit.Size-last)
	s.dataSent() // before the last byte, after which the backend may answer
	if err == nil {
		err = s.copyLiteral(&s.bw, last)
	}
	if err != nil {
		return nil, err
	}
	return s.readCommandLine()
}

// literalChunk is how much literal data is copied between two resets of the
// idle timeout: an upload that keeps coming is activity, however long it
// takes.
const literalChunk = 1 << 20

// copyLiteral copies n bytes of literal data from the client to dst. While
// it runs the client, not the backend, is working (busy).
func (s *session) copyLiteral(dst io.Writer, n int64) error {
	s.setReadingLiteral(true)
	defer s.setReadingLiteral(false)
	for n > 0 {
		chunk := min(n, literalChunk)
		if _, err := io.CopyN(dst, s.cr, chunk); err != nil {
			return err
		}
		n -= chunk
		s.touch()
	}
	return nil
}

func (s *session) setReadingLiteral(on bool) {
	s.mu.Lock()
	s.readingLiteral = on
	s.mu.Unlock()
}

// skipCommand drops the rest of a command the backend refused before its
// non-synchronizing literal: the data, and any lines and non-synchronizing
// literals after it. A synchronizing literal ends it (the client waits for a
// "+" and gets the tagged response instead).
func (s *session) skipCommand(lit imapwire.Literal) error {
	for lit.NonSync {
		if err := s.copyLiteral(io.Discard, lit.Size); err != nil {
			return err
		}
		line, err := s.readCommandLine()
		if err != nil {
			return err
		}
		var more bool
		if lit, more = imapwire.LiteralSuffix(line); !more {
			return nil
		}
	}
	return nil
}

// hasLiteralSuffix reports whether a line ends with a literal header.
func hasLiteralSuffix(line []byte) bool {
	_, ok := imapwire.LiteralSuffix(line)
	return ok
}

// isDone reports whether line is IDLE's DONE (RFC 2177), in any case.
func isDone(line []byte) bool {
	return bytes.EqualFold(imapwire.TrimCRLF(line), []byte("DONE"))
}
