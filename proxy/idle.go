package proxy

import (
	"context"

	"github.com/xapsproxy/xapsproxy/internal/imapwire"
)

// handleIdle forwards IDLE (RFC 2177) and, once the backend has started it,
// the client's next line, which must be DONE. Until the backend has said
// "+", nothing more is read from the client: lines sent behind an IDLE the
// backend refuses are commands, and are read as such.
func (s *session) handleIdle(ctx context.Context, line []byte, tag string, rest []byte) error {
	if !imapwire.NewDecoder(rest, nil).CRLF() {
		return s.refuse(tag, line, "BAD IDLE takes no arguments")
	}
	c := &command{tag: tag, kind: kindIdle}
	if err := s.push(c); err != nil {
		return err
	}
	if _, err := s.bw.Write(line); err != nil {
		return err
	}
	started, err := s.awaitContinuation(c, true)
	if err != nil || !started {
		return err
	}
	next, err := s.readLine()
	if err != nil {
		return err
	}
	done := isDone(next)
	s.mu.Lock()
	ended := c.done
	if !ended && !done {
		// As Dovecot does: IDLE ends, with BAD, and the line is dropped.
		c.reply = tag + " BAD Expected DONE to end IDLE"
	}
	s.mu.Unlock()
	switch {
	case ended && done:
		// The backend ended IDLE itself; the DONE crossed its response.
		return nil
	case ended:
		return s.dispatch(ctx, next)
	}
	_, err = s.bw.WriteString("DONE\r\n")
	return err
}
