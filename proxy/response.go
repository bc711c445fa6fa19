package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"time"

	"github.com/xapsproxy/xapsproxy/internal/imapwire"
)

// errDesync ends a session whose backend answered something the proxy never
// sent or asked for: the two read the stream differently.
var errDesync = errors.New("proxy: backend response matches no command")

// backendLoop forwards backend responses to the client until either side
// closes, or until a draining session has nothing left running.
func (s *session) backendLoop() error {
	for {
		br, err := s.brd.next()
		if err != nil {
			return err
		}
		s.br = br
		s.backendSeen.Store(time.Now().UnixNano())
		first, err := s.br.ReadSlice('\n')
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return err
		}
		done, err := s.forwardResponse(first, err == nil)
		if errors.Is(err, errDesync) {
			s.log.Warn("backend response matches no command in flight; ending the session", "response", responseKind(first))
			s.bye("[SERVERBUG] Unexpected response from the mail server")
			return err
		}
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
		return nil, s.forwardContinuation(first)
	case respTagged:
		if done = s.complete(tag, status); done == nil {
			return nil, errDesync
		}
		s.captureLogin(done) // before the client hears it is logged in
		if done.reply != "" || done.own {
			return done, s.replaceResponse(done, first)
		}
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
	return done, s.flushUnlessMore()
}

// replaceResponse sends the proxy's own verdict on c in place of the
// backend's tagged response, whose line is dropped (and nothing, for the
// proxy's own commands).
func (s *session) replaceResponse(c *command, first []byte) error {
	if _, _, err := imapwire.CopyLine(io.Discard, s.br, first); err != nil {
		return err
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if c.reply != "" {
		if _, err := s.cw.WriteString(c.reply + "\r\n"); err != nil {
			return err
		}
	}
	s.finish(c)
	return s.flushUnlessMore()
}

// flushUnlessMore flushes the client writer unless more backend responses
// are already buffered, which then go out together. Called with wmu held.
func (s *session) flushUnlessMore() error {
	if completeLineBuffered(s.br) {
		return nil
	}
	return s.cw.Flush()
}

// forwardContinuation hands a "+" to the command waiting for it: to the
// client when the client asked for it, else it is dropped.
func (s *session) forwardContinuation(first []byte) error {
	w := s.takeContinuation()
	if w == nil {
		return errDesync
	}
	var err error
	if w.forward {
		s.wmu.Lock()
		if _, _, err = imapwire.CopyLine(&s.cw, s.br, first); err == nil {
			err = s.cw.Flush()
		}
		s.wmu.Unlock()
	} else {
		_, _, err = imapwire.CopyLine(io.Discard, s.br, first)
	}
	if err != nil {
		return err
	}
	if s.completesAlready(w.cmd) {
		// It asked for data and answered without waiting for it: the
		// data would be read as commands. (A completion that comes
		// later, while the data goes out, is caught by complete.)
		return errDesync
	}
	w.result <- true
	return nil
}

// completesAlready reports whether the backend responses already read hold
// c's tagged response next.
func (s *session) completesAlready(c *command) bool {
	n := s.br.Buffered()
	if n == 0 {
		return false
	}
	next, _ := s.br.Peek(n)
	if i := bytes.IndexByte(next, '\n'); i >= 0 {
		next = next[:i+1]
	}
	kind, tag, _, _ := classify(next)
	return kind == respTagged && tag == c.tag
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
		if string(t) != "*" {
			// A tag and nothing else is still a tagged response, to
			// whatever command has that tag.
			return respTagged, string(t), "", false
		}
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

// responseKind names a response for a log line without its text, which may
// hold anything.
func responseKind(line []byte) string {
	switch kind, _, _, _ := classify(line); kind {
	case respContinuation:
		return "continuation request"
	case respTagged:
		return "tagged"
	case respStatus:
		return "untagged status"
	}
	return "untagged data"
}
