package proxy

import "time"

// The proxy and the backend must agree on where every command ends, or a
// client could hide commands from the proxy inside what the proxy takes for
// literal data or IDLE/AUTHENTICATE continuation lines (and the reverse).
// The rules that keep them in step:
//
//   - A command that may draw a continuation request ("+": a literal, IDLE,
//     AUTHENTICATE) is sent only when no other command is in flight, and
//     after it the proxy sends nothing more until the backend has either
//     asked for the data or completed that command. So a "+" can only
//     belong to that one command; a "+" when none waits means the backend
//     reads the stream differently, and the session ends.
//   - Every line the proxy forwards has at most one literal header, at its
//     end (imapwire.ScanCommandLine), so the backend can ask for nothing
//     the proxy does not expect.
//   - Once the backend has asked for data, it must read all of it before it
//     may complete the command: a completion in between (sendingData) ends
//     the session too, as the rest of the data would be read as commands.
//   - A completion does not always mean the backend is done reading the
//     command: Dovecot's SETMETADATA answers BAD early and goes on reading,
//     asking for a later literal. So when the backend answers a command
//     instead of asking for its literal, the proxy sends a NOOP of its own
//     (resync) and forwards nothing until it is answered.
//   - A backend may also neither ask nor answer (Dovecot reads a literal in
//     APPEND's flag list without asking): while the proxy waits it reads
//     nothing from the client, so once the backend has been silent for the
//     continuation timeout, the session ends.

// contWait is the one command waiting for a continuation request.
type contWait struct {
	cmd *command
	// forward: the client asked for the "+" (a synchronizing literal of its
	// own, IDLE, AUTHENTICATE) and gets it; otherwise the continuation
	// request is the proxy's own and is dropped.
	forward bool
	result  chan bool // true: "+" came; false: the command completed instead
}

// sendAwaiting writes out, which ends what may draw a "+" for c (a line
// ending in a literal header, IDLE, an AUTHENTICATE command or response),
// flushes, and waits until the backend asks for c's data (true) or completes
// c (false). c waits from before out is written: a long line goes out as it
// is written, and the backend may answer before the write returns.
func (s *session) sendAwaiting(c *command, forward bool, out []byte) (bool, error) {
	s.mu.Lock()
	if c.done {
		s.mu.Unlock()
		return false, nil
	}
	w := &contWait{cmd: c, forward: forward, result: make(chan bool, 1)}
	s.waiting = w
	s.mu.Unlock()
	if err := s.writeData(out); err != nil {
		return false, err
	}
	if err := s.bw.Flush(); err != nil {
		return false, err
	}
	// Meanwhile nothing is read from the client, so a client that hangs up
	// goes unnoticed: a backend that neither asks nor answers (Dovecot
	// reads a literal in APPEND's flag list without asking for it) must not
	// keep the session.
	return waitBackend(s, w.result, "the backend neither asked for a command's data nor answered it")
}

// waitBackend waits for ch for as long as the backend keeps talking: once it
// has sent nothing for the continuation timeout, counted from the start of
// the wait or its last response, the session ends (what says why, in the
// log).
func waitBackend[T any](s *session, ch <-chan T, what string) (T, error) {
	var zero T
	start := time.Now()
	t := time.NewTimer(s.srv.continuationTimeout)
	defer t.Stop()
	for {
		select {
		case v := <-ch:
			return v, nil
		case <-s.done:
			return zero, errClosed
		case <-t.C:
		}
		last := max(start.UnixNano(), s.backendSeen.Load())
		if rest := s.srv.continuationTimeout - time.Since(time.Unix(0, last)); rest > 0 {
			t.Reset(rest)
			continue
		}
		s.log.Warn(what, "timeout", s.srv.continuationTimeout)
		s.bye("[UNAVAILABLE] The mail server did not answer")
		return zero, errClosed
	}
}

// takeContinuation is the backend reader's side: it returns the command
// waiting for the "+" that just came, or nil if none is, and marks that
// command as the one whose data the backend now reads.
func (s *session) takeContinuation() *contWait {
	s.mu.Lock()
	defer s.mu.Unlock()
	w := s.waiting
	s.waiting = nil
	if w != nil {
		s.sendingData = w.cmd
	}
	return w
}

// dataSent is the client reader's side: all but the last byte of the data
// the backend asked for has been written; once it has the last one it may
// complete the command.
func (s *session) dataSent() {
	s.mu.Lock()
	s.sendingData = nil
	s.mu.Unlock()
}

// writeData writes p to the backend, the whole of what it asked for (a
// line), marking it sent before its last byte goes.
func (s *session) writeData(p []byte) error {
	if len(p) > 1 {
		if _, err := s.bw.Write(p[:len(p)-1]); err != nil {
			return err
		}
	}
	s.dataSent()
	_, err := s.bw.Write(p[max(len(p)-1, 0):])
	return err
}

// syncTag tags the proxy's own NOOP of resync. No client command can be in
// flight with it: resync runs when nothing else is.
const syncTag = "xaps.sync"

// resync makes sure the backend is done with command c, which it answered
// instead of asking for the data of a literal header the proxy had sent
// (when c is then the only command in flight). Dovecot may do so and still
// go on reading the command: SETMETADATA answers a bad entry name with BAD
// at once, then asks for a later literal ("+") all the same. The proxy
// sends a NOOP of its own and forwards nothing until it is answered; a "+"
// that comes first has nothing waiting for it and ends the session.
func (s *session) resync() error {
	c := &command{tag: syncTag, own: true, answered: make(chan struct{})}
	if err := s.push(c); err != nil {
		return err
	}
	if _, err := s.bw.WriteString(syncTag + " NOOP\r\n"); err != nil {
		return err
	}
	if err := s.bw.Flush(); err != nil {
		return err
	}
	// Dovecot may also take the NOOP for the rest of the command and never
	// answer it (some refusals leave it skipping a line).
	_, err := waitBackend(s, c.answered, "the backend did not answer the proxy's NOOP after a command it answered early")
	return err
}
