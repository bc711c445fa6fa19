package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"io"

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

// forward sends command c to the backend. line is its first line; literals
// and the lines after them are streamed from the client as they come. A
// synchronizing literal goes on only once the backend sent "+" (which the
// client also needs to see); if the backend completes the command instead,
// the client sends no data and neither does the proxy.
func (s *session) forward(line []byte, c *command, capt *capture) error {
	if err := s.push(c); err != nil {
		return err
	}
	for first := true; ; first = false {
		lit, hasLit := imapwire.LiteralSuffix(line)
		if hasLit && lit.Size > maxPreAuthLiteral {
			if authenticated, _ := s.authState(); !authenticated {
				return s.refuseLiteral(c, first && !lit.NonSync)
			}
		}
		if capt != nil {
			capt.Write(line)
			if !hasLit && capt.finish != nil {
				capt.finish(capt.buf)
			}
		}
		var wait chan bool
		if hasLit && !lit.NonSync {
			wait = s.awaitLiteral(c)
		}
		if _, err := s.bw.Write(line); err != nil {
			return err
		}
		if !hasLit {
			return nil // clientLoop flushes, unless the next command is here
		}
		if wait != nil {
			if err := s.bw.Flush(); err != nil {
				return err
			}
			select {
			case goAhead := <-wait:
				if !goAhead {
					return nil
				}
			case <-s.done:
				return errClosed
			}
		}
		var dst io.Writer = &s.bw
		if capt != nil {
			dst = io.MultiWriter(&s.bw, capt)
		}
		s.setReadingLiteral(true)
		_, err := io.CopyN(dst, s.cr, lit.Size)
		if err == nil {
			line, err = imapwire.ReadLine(s.cr, s.lineBuf, maxLineLength)
			s.lineBuf = line[:0]
		}
		s.setReadingLiteral(false)
		if errors.Is(err, imapwire.ErrLineTooLong) {
			s.bye("Command line too long")
		}
		if err != nil {
			return err
		}
	}
}

func (s *session) setReadingLiteral(on bool) {
	s.mu.Lock()
	s.readingLiteral = on
	s.mu.Unlock()
}

// refuseLiteral turns down a large literal before login, without reading it:
// a synchronizing literal at the start of a command gets a tagged BAD (the
// client then sends no data); anything else cannot be skipped cheaply, and
// part of the command may already be with the backend, so the session ends.
func (s *session) refuseLiteral(c *command, canRefuse bool) error {
	if !canRefuse {
		s.bye("Literal too large before login")
		return errBadInput
	}
	s.mu.Lock()
	c.done = true
	s.mu.Unlock()
	s.finish(c)
	if err := s.waitDrained(); err != nil {
		return err
	}
	return s.writeClient(c.tag + " BAD Literal too large before login\r\n")
}

// forwardRaw sends one line of continuation data (IDLE's DONE, an
// AUTHENTICATE response).
func (s *session) forwardRaw(line []byte) error {
	_, err := s.bw.Write(line)
	return err
}

// backendLoop forwards backend responses to the client until either side
// closes, or until a draining session has nothing left running.
func (s *session) backendLoop() error {
	for {
		br, err := s.brd.next()
		if err != nil {
			return err
		}
		s.br = br
		first, err := s.br.ReadSlice('\n')
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return err
		}
		done, err := s.forwardResponse(first, err == nil)
		if err != nil {
			return err
		}
		if done != nil {
			s.mu.Lock()
			end := s.draining && !s.busy()
			s.mu.Unlock()
			if end {
				s.bye("Server shutting down")
				return nil
			}
		}
	}
}

// forwardResponse forwards one response whose first line (whole, or its
// first bufio-full chunk) is first: the line itself, then any literals and
// the lines that follow them. It returns the command the response completed.
func (s *session) forwardResponse(first []byte, whole bool) (*command, error) {
	kind, tag, status, caps := classify(first)
	var done *command
	switch kind {
	case respContinuation:
		s.routePlus()
	case respTagged:
		done = s.complete(tag, status)
	}
	out := first
	if whole && caps {
		out = s.editCapabilities(first, false)
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	lit, hasLit, err := imapwire.CopyLine(&s.cw, s.br, out)
	// Only data responses carry literals; status and continuation lines end
	// in free text, which may look like one (RFC 9051 resp-text).
	hasLit = hasLit && kind == respData
	for err == nil && hasLit {
		if _, err = io.CopyN(&s.cw, s.br, lit.Size); err != nil {
			break
		}
		lit, hasLit, err = imapwire.CopyLine(&s.cw, s.br, nil)
	}
	if err != nil {
		return nil, err
	}
	if done != nil {
		// Written, but not yet flushed to the client: a reply of the
		// proxy's own waiting for this command comes after it, and the
		// client cannot act on it before the state is up to date.
		s.finish(done)
	}
	if completeLineBuffered(s.br) {
		return done, nil // more responses already here: flush with them
	}
	return done, s.cw.Flush()
}

// Kinds of backend responses.
const (
	respData         = iota // untagged data; may carry literals
	respStatus              // untagged OK, NO, BAD, BYE or PREAUTH
	respTagged              // completion of a command
	respContinuation        // "+"
)

// classify tells what a response is from its first line, and whether it
// carries a capability list (`* CAPABILITY ...` or a [CAPABILITY ...] code).
func classify(line []byte) (kind int, tag, status string, caps bool) {
	if len(line) > 0 && line[0] == '+' {
		return respContinuation, "", "", false
	}
	t, rest, ok := bytes.Cut(imapwire.TrimCRLF(line), []byte(" "))
	if !ok {
		return respData, "", "", false
	}
	word, text, _ := bytes.Cut(rest, []byte(" "))
	hasCode := hasPrefixFold(text, "[CAPABILITY ")
	switch {
	case string(t) != "*":
		return respTagged, string(t), string(word), hasCode
	case isStatus(string(word)):
		return respStatus, "", string(word), hasCode
	}
	return respData, "", "", equalFold(string(word), "CAPABILITY")
}
