package watch

import "sync/atomic"

// State is what a watcher is doing.
type State int

const (
	// StateConnecting: connecting, logging in, or checking the mailboxes
	// for the first time in this session.
	StateConnecting State = iota
	// StateWatching: logged in, mailboxes checked, IDLE started; the
	// watcher stays in this state until the session ends.
	StateWatching
	// StateBackoff: waiting out a backoff after a failed session.
	StateBackoff
	// StateUnreachable: waiting for the backend to be reachable again,
	// while a single prober redials it.
	StateUnreachable
	// StateNoCredential: the Credentials have nothing to log in with
	// (auth = "captured": the backend refused the password last captured,
	// or none was captured yet); waiting for the user's next login.
	StateNoCredential
	// NumStates is the number of states, for arrays indexed by State.
	NumStates
)

func (s State) String() string {
	switch s {
	case StateConnecting:
		return "connecting"
	case StateWatching:
		return "watching"
	case StateBackoff:
		return "backoff"
	case StateUnreachable:
		return "unreachable"
	case StateNoCredential:
		return "waiting for login"
	}
	return "unknown"
}

// Stats is a snapshot of the manager's watchers and their backend
// connections, for monitoring. Counters count since New.
type Stats struct {
	// Watchers counts the running watchers by state.
	Watchers [NumStates]int
	// GreetingTimeouts counts backend connections given up because the
	// backend sent no greeting in time.
	GreetingTimeouts uint64
	// Reconnects counts backend connections opened by a watcher to replace
	// a failed or lost one (a watcher's first connection is not counted).
	Reconnects uint64
	// BackendUnreachable is true while watchers wait for the backend; Probes
	// counts the prober's connections.
	BackendUnreachable bool
	Probes             uint64

	// Owners counts the accounts with registrations; Source names the
	// event source that feeds them (SourceEvents or SourceIdle).
	Owners int
	Source string
	// NotifySessions and IdleSessions count the accounts' backend
	// connections by what they wait with (SourceAuto, SourceNotify and
	// SourceIdle), connecting ones included.
	NotifySessions, IdleSessions int
	// Hints counts the hints applied to an owner; HintsUnregistered those
	// about a mailbox no device registered; HintsUnwatched those for a user
	// with no registrations (for Dovecot's events: every other user, or a
	// user name that does not match, see backend.username_format);
	// HintsOverflowed those that found the queue full, their accounts
	// being caught up instead.
	Hints, HintsUnregistered, HintsUnwatched, HintsOverflowed uint64
	// Events counts what owners reported to the push stage; EventsNew and
	// EventsChanged split it by kind (event.KindNew, event.KindChanged).
	Events, EventsNew, EventsChanged uint64
	// CatchUps counts accounts looked at by the catch-up, CatchUpFailures
	// those whose look failed; CatchUpPending those waiting for one.
	CatchUps, CatchUpFailures uint64
	CatchUpPending            int
	// CatchUpFailingInRow counts the catch-up's looks failed since its
	// last one that succeeded.
	CatchUpFailingInRow int

	// LoginsRefused counts backend logins refused for good (a NO that is
	// not temporary: a wrong master password, an unknown user),
	// LoginsFailed the others that failed after the connection was up
	// (a temporary NO, a BAD, the connection lost during LOGIN).
	LoginsRefused, LoginsFailed uint64
	// Refused is the watchers in StateBackoff because the backend refused
	// their login.
	Refused int
}

// counters are the manager's shared statistics, updated by the watchers.
type counters struct {
	states           [NumStates]atomic.Int64
	greetingTimeouts atomic.Uint64
	reconnects       atomic.Uint64
	probes           atomic.Uint64

	hints, hintsUnregistered, hintsUnwatched, hintsOverflowed atomic.Uint64
	events, eventsNew, eventsChanged                          atomic.Uint64
	catchUps, catchUpFailures                                 atomic.Uint64
	catchUpFailingInRow                                       atomic.Int64
	notifySessions, idleSessions                              atomic.Int64
	loginsRefused, loginsFailed                               atomic.Uint64
	refused                                                   atomic.Int64
}

// Stats returns the current statistics. It is safe to call from any
// goroutine, at any time. The counters are read before the states, so a
// watcher counted as watching after a reconnect counted in Reconnects is
// watching in the new session.
func (m *Manager) Stats() Stats {
	c := &m.stats
	s := Stats{
		GreetingTimeouts:    c.greetingTimeouts.Load(),
		Reconnects:          c.reconnects.Load(),
		BackendUnreachable:  !m.gate.up(),
		Probes:              c.probes.Load(),
		Owners:              m.Owners(),
		Source:              m.opts.Source,
		NotifySessions:      int(c.notifySessions.Load()),
		IdleSessions:        int(c.idleSessions.Load()),
		Hints:               c.hints.Load(),
		HintsUnregistered:   c.hintsUnregistered.Load(),
		HintsUnwatched:      c.hintsUnwatched.Load(),
		HintsOverflowed:     c.hintsOverflowed.Load(),
		Events:              c.events.Load(),
		EventsNew:           c.eventsNew.Load(),
		EventsChanged:       c.eventsChanged.Load(),
		LoginsRefused:       c.loginsRefused.Load(),
		LoginsFailed:        c.loginsFailed.Load(),
		Refused:             int(c.refused.Load()),
		CatchUpFailingInRow: int(c.catchUpFailingInRow.Load()),
		CatchUps:            c.catchUps.Load(),
		CatchUpFailures:     c.catchUpFailures.Load(),
		CatchUpPending:      m.catchUp.Pending(),
	}
	for st := range s.Watchers {
		s.Watchers[st] = int(c.states[st].Load())
	}
	return s
}

// setState moves the watcher to state s; only the watcher's goroutine calls
// it. Counting the change as two steps may make a snapshot miss a watcher
// for an instant, which monitoring does not mind.
func (w *watcher) setState(s State) {
	if s == w.state {
		return
	}
	w.m.stats.states[w.state].Add(-1)
	w.m.stats.states[s].Add(1)
	w.state = s
	w.o.status.setState(s)
}
