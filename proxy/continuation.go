package proxy

// The proxy and the backend must agree on where every command ends, or a
// client could hide commands from the proxy inside what the proxy takes for
// literal data or IDLE/AUTHENTICATE continuation lines (and the reverse).
// The rule that keeps them in step: after sending anything the backend may
// answer with a continuation request ("+": a literal, IDLE, AUTHENTICATE and
// each of its responses), the proxy sends nothing more until the backend has
// either asked for the data or completed that command. So at most one
// command can be waiting for "+", and a "+" belongs to it beyond doubt;
// a "+" when none waits means the backend reads the stream differently, and
// the session ends.

// contWait is the one command waiting for a continuation request.
type contWait struct {
	cmd *command
	// forward: the client asked for the "+" (a synchronizing literal of its
	// own, IDLE, AUTHENTICATE) and gets it; otherwise the continuation
	// request is the proxy's own and is dropped.
	forward bool
	result  chan bool // true: "+" came; false: the command completed instead
}

// awaitContinuation flushes what was written to the backend and waits until
// the backend asks for c's data (true) or completes c (false).
func (s *session) awaitContinuation(c *command, forward bool) (bool, error) {
	s.mu.Lock()
	if c.done {
		s.mu.Unlock()
		return false, nil
	}
	w := &contWait{cmd: c, forward: forward, result: make(chan bool, 1)}
	s.waiting = w
	s.mu.Unlock()
	if err := s.bw.Flush(); err != nil {
		return false, err
	}
	select {
	case ok := <-w.result:
		return ok, nil
	case <-s.done:
		return false, errClosed
	}
}

// takeContinuation is the backend reader's side: it returns the command
// waiting for the "+" that just came, or nil if none is.
func (s *session) takeContinuation() *contWait {
	s.mu.Lock()
	defer s.mu.Unlock()
	w := s.waiting
	s.waiting = nil
	return w
}
