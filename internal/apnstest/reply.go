package apnstest

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"time"
)

// Reply is one answer the fake gives to a push.
type Reply struct {
	Status int    // HTTP status; 0 = 200
	Reason string // APNs reason in the JSON body, e.g. "Unregistered"; unused with 200
	// RetryAfter is the Retry-After header, verbatim: seconds ("120") or
	// an HTTP date. "" sends none.
	RetryAfter string
	// Delay holds the answer back this long, on top of SetDelay's delay. A
	// client that gives up meanwhile gets no answer.
	Delay time.Duration
}

// SetDefault sets the answer for tokens without their own (initially 200).
func (s *Server) SetDefault(status int, reason string) {
	s.SetDefaultReply(Reply{Status: status, Reason: reason})
}

// SetDefaultReply is SetDefault with every field of a Reply.
func (s *Server) SetDefaultReply(r Reply) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.def = r
}

// SetResponse sets the answer to every push to token (any case).
func (s *Server) SetResponse(token string, status int, reason string) {
	s.SetReply(token, Reply{Status: status, Reason: reason})
}

// SetReply is SetResponse with every field of a Reply.
func (s *Server) SetReply(token string, r Reply) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.responses[strings.ToLower(token)] = r
}

// QueueResponse adds a one-shot answer for the next push to token; queued
// answers are used in order before the SetResponse or default one.
func (s *Server) QueueResponse(token string, status int, reason string) {
	s.QueueReply(token, Reply{Status: status, Reason: reason})
}

// QueueReply is QueueResponse with every field of a Reply.
func (s *Server) QueueReply(token string, r Reply) {
	s.mu.Lock()
	defer s.mu.Unlock()
	tok := strings.ToLower(token)
	s.queued[tok] = append(s.queued[tok], r)
}

// SetDelay holds every answer back by d (0 = answer at once), as a slow or
// distant APNs would. A client that gives up meanwhile gets no answer; the
// end of the test does not wait for the delay.
func (s *Server) SetDelay(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.delay = d
}

// Hold makes requests that arrive from now on wait for Release: they are
// counted and recorded on arrival but not answered. A held request whose
// client gives up (its deadline, a cancelled context) is never answered,
// which is also how to make APNs hang: Hold without Release.
func (s *Server) Hold() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.hold == nil {
		s.hold = make(chan struct{})
	}
}

// Release answers the held requests and stops holding new ones.
func (s *Server) Release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.hold != nil {
		close(s.hold)
		s.hold = nil
	}
}

// SetRecord turns the recording of each Request on (the default) or off.
// Off, requests are still checked, counted and answered, but Requests
// returns none of those that arrive meanwhile: for benchmarks, which would
// otherwise keep every header and body.
func (s *Server) SetRecord(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.record = on
}

func (s *Server) handle(w http.ResponseWriter, r *http.Request) {
	now := time.Now()
	req, errs, reason := s.check(r, now)
	req.Conn, _ = r.Context().Value(connKey{}).(int)

	s.mu.Lock()
	rep := s.def
	tok := strings.ToLower(req.Token)
	if len(errs) > 0 {
		rep = Reply{Status: http.StatusBadRequest, Reason: reason}
	} else if q := s.queued[tok]; len(q) > 0 {
		rep = q[0]
		if len(q) == 1 {
			delete(s.queued, tok)
		} else {
			s.queued[tok] = q[1:]
		}
	} else if tr, ok := s.responses[tok]; ok {
		rep = tr
	}
	s.errs = append(s.errs, errs...)
	s.count++
	index := -1
	req.APNsID = newUUID()
	if s.record {
		req.Header = r.Header.Clone()
		index = len(s.requests)
		s.requests = append(s.requests, req)
	}
	if a := req.Authorization; a != "" && !s.authSeen[a] {
		s.authSeen[a] = true
		s.auths = append(s.auths, a)
	}
	hold, delay := s.hold, s.delay+rep.Delay
	s.notifyLocked()
	s.mu.Unlock()

	ctx := r.Context()
	answered := s.wait(ctx, hold, delay)
	if answered {
		writeReply(w, rep, req.APNsID, now)
		// Best effort: a client that resets the stream just now is
		// counted as answered.
		answered = ctx.Err() == nil
	}
	s.mu.Lock()
	if answered {
		s.answered++
		if index >= 0 {
			s.requests[index].Answered = true
		}
	} else {
		s.abandoned++
	}
	s.notifyLocked()
	s.mu.Unlock()
}

// wait waits for hold (if not nil) to be closed, and then for delay. It
// reports false if the client went away (ctx is done) or the test ended
// first.
func (s *Server) wait(ctx context.Context, hold <-chan struct{}, delay time.Duration) bool {
	if hold != nil {
		select {
		case <-hold:
		case <-ctx.Done():
			return false
		case <-s.ctx.Done():
			return false
		}
	}
	if delay > 0 {
		timer := time.NewTimer(delay)
		defer timer.Stop()
		select {
		case <-timer.C:
		case <-ctx.Done():
			return false
		case <-s.ctx.Done():
			return false
		}
	}
	return ctx.Err() == nil
}

// writeReply writes rep as APNs does: an apns-id always, and for an error a
// JSON body with the reason (and for 410 the time the token went away).
func writeReply(w http.ResponseWriter, rep Reply, apnsID string, now time.Time) {
	status := rep.Status
	if status == 0 {
		status = http.StatusOK
	}
	w.Header().Set("apns-id", apnsID)
	if rep.RetryAfter != "" {
		w.Header().Set("Retry-After", rep.RetryAfter)
	}
	if status == http.StatusOK {
		w.WriteHeader(http.StatusOK)
		return
	}
	answer := map[string]any{"reason": rep.Reason}
	if status == http.StatusGone {
		answer["timestamp"] = now.UnixMilli()
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(answer)
}
