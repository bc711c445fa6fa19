package proxy

import (
	"github.com/xapsproxy/xapsproxy/internal/imapwire"
)

// cmdKind says what the proxy must follow of a forwarded command.
type cmdKind int

const (
	kindPlain cmdKind = iota
	kindLogin         // LOGIN: authenticates on OK
	kindAuth          // AUTHENTICATE: authenticates on OK; client sends continuation lines
	kindIdle          // IDLE: the client's next line is DONE
)

// command is a forwarded command waiting for its tagged response. The session
// keeps them in the order they were sent (s.pending), which is the order a
// server answers continuation requests in; tags are only used to match the
// tagged response, to the oldest command with that tag.
type command struct {
	tag  string
	kind cmdKind

	// Guarded by session.mu.
	user      string    // kindLogin/kindAuth: the user name, "" if unknown
	mech      string    // kindAuth: SASL mechanism, upper case
	contLines int       // kindAuth: continuation lines the client sent
	gotPlus   bool      // kindIdle: the "+" that starts IDLE has come
	litWait   chan bool // the client reader waits for "+" for a literal of this command
	done      bool      // its tagged response has come (it is being written)
}

// push adds a command about to be forwarded. When maxPipeline commands are
// already waiting, it first flushes them and waits for room: a client cannot
// make the proxy hold an unbounded queue.
func (s *session) push(c *command) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.pending) >= maxPipeline && !s.closed {
		s.mu.Unlock()
		err := s.bw.Flush()
		s.mu.Lock()
		if err != nil {
			return err
		}
		if len(s.pending) >= maxPipeline && !s.closed {
			s.cond.Wait()
		}
	}
	if s.closed {
		return errClosed
	}
	s.pending = append(s.pending, c)
	if c.kind == kindIdle || c.kind == kindAuth {
		s.contCmd = c
	}
	return nil
}

// waitDrained flushes what was forwarded and blocks until every forwarded
// command has been answered, so that a reply of the proxy's own comes in
// order after them.
func (s *session) waitDrained() error {
	if err := s.bw.Flush(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.pending) > 0 && !s.closed {
		s.cond.Wait()
	}
	if s.closed {
		return errClosed
	}
	return nil
}

// awaitLiteral registers that the client reader waits for the backend's "+"
// before sending the data of a synchronizing literal of c.
func (s *session) awaitLiteral(c *command) chan bool {
	ch := make(chan bool, 1)
	s.mu.Lock()
	c.litWait = ch
	s.mu.Unlock()
	return ch
}

// routePlus gives a continuation request from the backend to the oldest
// command that can be waiting for one.
func (s *session) routePlus() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.pending {
		switch {
		case c.litWait != nil:
			c.litWait <- true
			c.litWait = nil
			return
		case c.kind == kindIdle && !c.gotPlus:
			c.gotPlus = true
			return
		case c.kind == kindAuth:
			return
		}
	}
}

// complete applies the tagged response of a command to the session state and
// returns the command. It stays pending until finish: the proxy's own replies
// must wait until the response has been written.
func (s *session) complete(tag, status string) *command {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.pending {
		if c.tag != tag || c.done {
			continue
		}
		c.done = true
		if (c.kind == kindLogin || c.kind == kindAuth) && equalFold(status, "OK") {
			s.authenticated = true
			s.user = c.user
			s.timer.Reset(s.srv.idleTimeout)
			s.log.Info("logged in", "user", c.user)
		}
		if c.litWait != nil {
			c.litWait <- false
			c.litWait = nil
		}
		if s.contCmd == c {
			// Now, not at finish: the client may send its next command as
			// soon as it sees this response.
			s.contCmd = nil
		}
		return c
	}
	return nil
}

// finish removes a completed command once its response has been written.
func (s *session) finish(c *command) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, p := range s.pending {
		if p == c {
			if i == 0 {
				s.pending[0] = nil
				s.pending = s.pending[1:]
			} else {
				s.pending = append(s.pending[:i], s.pending[i+1:]...)
			}
			break
		}
	}
	if len(s.pending) == 0 {
		s.pending = s.pending[:0:0] // let the backing array go
	}
	if s.contCmd == c {
		s.contCmd = nil
	}
	s.cond.Broadcast()
}

// continuationLine reports whether line is continuation data of a running
// IDLE (its DONE) or AUTHENTICATE (SASL responses) rather than a command; for
// AUTHENTICATE PLAIN and LOGIN it notes the user from the first response.
func (s *session) continuationLine(line []byte) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.contCmd
	if c == nil {
		return false
	}
	if c.kind == kindIdle {
		// Anything while IDLE runs goes to the server, which ends IDLE:
		// DONE normally, or with BAD for a client that did not say DONE.
		s.contCmd = nil
		return true
	}
	c.contLines++
	if c.contLines == 1 && c.user == "" {
		c.user = saslUser(c.mech, imapwire.TrimCRLF(line))
	}
	return true
}

// busy reports whether the backend is working on a command other than IDLE:
// the client may then be silent for as long as it takes. A command whose
// literal the client is still sending is not the backend's work.
func (s *session) busy() bool {
	if s.readingLiteral {
		return false
	}
	for _, c := range s.pending {
		if c.kind != kindIdle {
			return true
		}
	}
	return false
}
