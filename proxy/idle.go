package proxy

import (
	"github.com/xapsproxy/xapsproxy/internal/imapwire"
)

// handleIdle forwards IDLE (RFC 2177) and, once the backend has started it,
// the client's next line, which must be DONE. IDLE goes out alone, and until
// the backend has said "+" nothing more is read from the client: lines sent
// behind an IDLE the backend refuses are commands, and are read as such.
// Once it has said "+", the backend must wait for DONE: ending IDLE on its
// own would make it read the DONE as a command, so that ends the session
// (continuation.go).
func (s *session) handleIdle(line []byte, tag string, rest []byte) error {
	if !imapwire.NewDecoder(rest, nil).CRLF() {
		return s.refuse(tag, line, "BAD IDLE takes no arguments")
	}
	if err := s.waitDrained(); err != nil {
		return err
	}
	c := &command{tag: tag, kind: kindIdle}
	if err := s.push(c); err != nil {
		return err
	}
	started, err := s.sendAwaiting(c, true, []byte(tag+" IDLE\r\n"))
	if err != nil || !started {
		return err
	}
	next, err := s.readLine()
	if err != nil {
		return err
	}
	if !isDone(next) {
		// As Dovecot does: IDLE ends, with BAD, and the line is dropped.
		s.mu.Lock()
		c.reply = tag + " BAD Expected DONE to end IDLE"
		s.mu.Unlock()
	}
	return s.writeData([]byte("DONE\r\n"))
}
