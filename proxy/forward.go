package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"slices"

	"github.com/xapsproxy/xapsproxy/internal/imapwire"
)

// capture keeps the bytes of a forwarded command (up to maxCaptureLength) so
// the proxy can read it, e.g. the user name of a LOGIN. finish is called with
// the whole command before its last line goes to the backend, so that state it
// sets is in place before the backend can answer.
type capture struct {
	buf      []byte
	overflow bool
	finish   func(cmd []byte)
}

func (c *capture) Write(p []byte) (int, error) {
	if len(c.buf)+len(p) > maxCaptureLength {
		c.overflow = true
	} else if !c.overflow {
		c.buf = append(c.buf, p...)
	}
	return len(p), nil
}

// wipe clears the captured bytes, which may hold a password.
func (c *capture) wipe() { clear(c.buf) }

// forward sends a command to the backend. line is its first line; literals
// and the lines after them are streamed from the client as they come. A
// synchronizing literal goes on only once the backend sent "+" (which the
// client also needs to see); if the backend completes the command instead,
// the client sends no data and neither does the proxy.
func (s *session) forward(line []byte, tag string, c *capture) error {
	if tag != "" {
		s.mu.Lock()
		s.pending = append(s.pending, tag)
		s.mu.Unlock()
	}
	for {
		lit, hasLit := imapwire.LiteralSuffix(line)
		if c != nil {
			c.Write(line)
			if !hasLit && c.finish != nil {
				c.finish(c.buf)
			}
		}
		var wait *contWait
		if hasLit && !lit.NonSync {
			wait = s.expectContinuation(tag)
		}
		if _, err := s.bw.Write(line); err != nil {
			return err
		}
		if !hasLit {
			if s.cr.Buffered() > 0 {
				return nil // more pipelined input: flush with it
			}
			return s.bw.Flush()
		}
		if wait != nil {
			if err := s.bw.Flush(); err != nil {
				return err
			}
			select {
			case goAhead := <-wait.ch:
				if !goAhead {
					return nil
				}
			case <-s.done:
				return net.ErrClosed
			}
		}
		var dst io.Writer = s.bw
		if c != nil {
			dst = io.MultiWriter(s.bw, c)
		}
		if _, err := io.CopyN(dst, s.cr, lit.Size); err != nil {
			return err
		}
		var err error
		line, err = imapwire.ReadLine(s.cr, s.lineBuf, maxLineLength)
		s.lineBuf = line[:0]
		if errors.Is(err, imapwire.ErrLineTooLong) {
			s.bye("Command line too long")
		}
		if err != nil {
			return err
		}
	}
}

func (s *session) expectContinuation(tag string) *contWait {
	w := &contWait{tag: tag, ch: make(chan bool, 1)}
	s.mu.Lock()
	s.contWait = w
	s.mu.Unlock()
	return w
}

// forwardRaw sends one line of continuation data (IDLE's DONE, an
// AUTHENTICATE response).
func (s *session) forwardRaw(line []byte) error {
	if _, err := s.bw.Write(line); err != nil {
		return err
	}
	return s.bw.Flush()
}

// continuationLine reports whether line is continuation data of a running
// IDLE or AUTHENTICATE rather than a new command.
func (s *session) continuationLine(line []byte) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.contMode
	if m == nil {
		return false
	}
	if !slices.Contains(s.pending, m.tag) {
		s.contMode = nil
		return false
	}
	if m.idle {
		if !bytes.EqualFold(imapwire.TrimCRLF(line), []byte("DONE")) {
			return false
		}
		s.contMode = nil
		return true
	}
	m.lines++
	if m.lines == 1 {
		if user := saslUser(m.mech, imapwire.TrimCRLF(line)); user != "" {
			s.authTags[m.tag] = user
		}
	}
	return true
}

// backendLoop forwards backend responses to the client until either side
// closes.
func (s *session) backendLoop() error {
	for {
		first, err := s.br.ReadSlice('\n')
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return err
		}
		if err := s.forwardResponse(first, err == nil); err != nil {
			return err
		}
	}
}

// forwardResponse forwards one response whose first line (whole, or its
// first bufio-full chunk) is first: the line itself, then any literals and
// the lines that follow them.
func (s *session) forwardResponse(first []byte, whole bool) error {
	s.observe(first)
	out := first
	if whole {
		out = s.editCapabilities(first, false)
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	lit, hasLit, err := imapwire.CopyLine(s.cw, s.br, out)
	for err == nil && hasLit {
		if _, err = io.CopyN(s.cw, s.br, lit.Size); err != nil {
			break
		}
		lit, hasLit, err = imapwire.CopyLine(s.cw, s.br, nil)
	}
	if err != nil {
		return err
	}
	if s.br.Buffered() > 0 {
		return nil // more responses already here: flush with them
	}
	return s.cw.Flush()
}

// observe updates the session from a response before the client sees it, so
// that the client's next command meets the new state.
func (s *session) observe(line []byte) {
	if len(line) > 0 && line[0] == '+' {
		s.mu.Lock()
		if w := s.contWait; w != nil {
			s.contWait = nil
			w.ch <- true
		}
		s.mu.Unlock()
		return
	}
	d := imapwire.NewDecoder(line, nil)
	tag, ok := d.Tag()
	if !ok || tag == "*" || !d.SP() {
		return
	}
	status, ok := d.Atom()
	if !ok {
		return
	}
	s.completed(tag, status)
}

// completed records the tagged response of a forwarded command.
func (s *session) completed(tag, status string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := slices.Index(s.pending, tag)
	if i < 0 {
		return
	}
	s.pending = slices.Delete(s.pending, i, i+1)
	if user, ok := s.authTags[tag]; ok {
		delete(s.authTags, tag)
		if equalFold(status, "OK") {
			s.authenticated = true
			s.user = user
			s.log.Info("logged in", "user", user)
		}
	}
	if w := s.contWait; w != nil && w.tag == tag {
		s.contWait = nil
		w.ch <- false
	}
	if m := s.contMode; m != nil && m.tag == tag {
		s.contMode = nil
	}
	if len(s.pending) == 0 && s.drained != nil {
		close(s.drained)
		s.drained = nil
	}
}
