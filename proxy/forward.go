package proxy

import (
	"bytes"
	"io"

	"github.com/xapsproxy/xapsproxy/internal/imapwire"
)

// forward sends command c to the backend. line is its first line; literals
// and the lines after them are streamed from the client as they come.
//
// Toward the backend every literal is synchronizing: a non-synchronizing
// {N+} from the client goes on as {N}, and the data follows only once the
// backend asked for it (continuation.go). A backend that refuses the command
// instead (a syntax it reads otherwise, a literal too large, no LITERAL+)
// then never sees the data, which it would otherwise take for commands. The
// client, which sent the data unasked, has it skipped. A synchronizing
// literal of the client's gets the backend's "+", or the completion, and the
// client sends no data then.
func (s *session) forward(line []byte, c *command) error {
	if err := s.push(c); err != nil {
		return err
	}
	for {
		lit, hasLit := imapwire.LiteralSuffix(line)
		if !hasLit {
			_, err := s.bw.Write(line)
			return err // clientLoop flushes, unless the next command is here
		}
		if _, err := s.bw.Write(synchronizing(line, lit)); err != nil {
			return err
		}
		goAhead, err := s.awaitContinuation(c, !lit.NonSync)
		if err != nil {
			return err
		}
		if !goAhead {
			if lit.NonSync {
				return s.skipCommand(lit)
			}
			return nil
		}
		if line, err = s.sendLiteral(c, lit); err != nil {
			return err
		}
	}
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

// sendLiteral copies the data of a literal from the client to the backend
// and returns the line that follows it.
func (s *session) sendLiteral(c *command, lit imapwire.Literal) ([]byte, error) {
	s.setSending(c)
	_, err := io.CopyN(&s.bw, s.cr, lit.Size)
	s.setSending(nil)
	if err != nil {
		return nil, err
	}
	return s.readCommandLine()
}

// setSending marks c as the command whose literal data is on its way to the
// backend (nil: none), which is also time the client, not the backend, is
// working.
func (s *session) setSending(c *command) {
	s.mu.Lock()
	s.sendingData = c
	s.readingLiteral = c != nil
	s.mu.Unlock()
}

// skipCommand drops the rest of a command the backend refused before its
// non-synchronizing literal: the data, and any lines and non-synchronizing
// literals after it. A synchronizing literal ends it (the client waits for a
// "+" and gets the tagged response instead).
func (s *session) skipCommand(lit imapwire.Literal) error {
	s.mu.Lock()
	s.readingLiteral = true
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.readingLiteral = false
		s.mu.Unlock()
	}()
	for lit.NonSync {
		if _, err := io.CopyN(io.Discard, s.cr, lit.Size); err != nil {
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
