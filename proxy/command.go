package proxy

// cmdKind says what the proxy must follow of a forwarded command.
type cmdKind int

const (
	kindPlain cmdKind = iota
	kindLogin         // LOGIN: authenticates its user on OK
	kindAuth          // AUTHENTICATE: authenticates its user on OK
	kindIdle          // IDLE: runs until the client's DONE
)

// command is a forwarded command waiting for its tagged response. The session
// keeps them in the order they were sent (s.pending) and by tag (s.inflight):
// the proxy never forwards a command whose tag is in flight, so a tagged
// response answers exactly one command, and one the proxy parsed itself.
type command struct {
	tag  string
	kind cmdKind
	user string // kindLogin, kindAuth: the user the session belongs to on OK
	// secret is the password of a kindLogin or kindAuth command, kept only
	// for Options.Captured (capture.go); nil otherwise.
	secret []byte
	own    bool // the proxy's own: its response goes no further
	// answered, if set, is closed once the response has been written.
	answered chan struct{}

	// Guarded by session.mu.
	done     bool // its tagged response has come (it is being written)
	loggedIn bool // kindLogin, kindAuth: the backend accepted it
	// reply, if set, is sent to the client instead of the backend's tagged
	// response: the proxy's own verdict on a command it ended (an IDLE
	// ended without DONE, a SASL exchange it cancelled).
	reply string
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
	s.inflight[c.tag] = c
	return nil
}

// tagInUse reports whether a command with this tag waits for its response.
func (s *session) tagInUse(tag string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.inflight[tag] != nil
}

// loginPending reports whether a LOGIN or AUTHENTICATE waits for its
// response.
func (s *session) loginPending() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.pending {
		if c.kind == kindLogin || c.kind == kindAuth {
			return true
		}
	}
	return false
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

// complete applies the tagged response of a command to the session state and
// returns the command, or nil if the response answers no command in flight.
// The command stays pending until finish: the proxy's own replies must wait
// until the response has been written.
func (s *session) complete(tag, status string) *command {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.inflight[tag]
	if c == nil || c == s.sendingData {
		// A response to nothing, or to a command whose literal data is
		// still on its way: the backend reads the stream differently from
		// the proxy, and nothing it says can be trusted.
		return nil
	}
	delete(s.inflight, tag)
	c.done = true
	if c.kind == kindLogin || c.kind == kindAuth {
		s.countLogin(equalFold(status, "OK"), c.reply != "")
	}
	if (c.kind == kindLogin || c.kind == kindAuth) && equalFold(status, "OK") && c.reply == "" {
		s.authenticated = true
		s.user = c.user
		c.loggedIn = true
		s.timer.Reset(s.srv.idleTimeout)
		s.log.Info("logged in", "user", c.user)
	}
	if w := s.waiting; w != nil && w.cmd == c {
		// The backend answered instead of asking for more.
		s.waiting = nil
		w.result <- false
	}
	return c
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
	if c.answered != nil {
		close(c.answered)
	}
	s.cond.Broadcast()
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
