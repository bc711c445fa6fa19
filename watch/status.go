package watch

import (
	"strings"
	"sync"
	"time"

	"github.com/xapsproxy/xapsproxy/event"
)

// AccountStatus is what the manager knows of one account right now, for
// the status page and `xapsproxy status`: a copy, safe to keep.
type AccountStatus struct {
	User string
	// Source is the manager's source: SourceEvents, SourceNotify,
	// SourceIdle, or for SourceAuto what it resolved to ("auto: notify"
	// until the backend was found without NOTIFY, then "auto: idle").
	Source string
	// Connection reports whether the account has a backend connection of
	// its own (every source but SourceEvents); State and Since are its
	// state and when it entered it.
	Connection bool
	State      State
	Since      time.Time
	// BackendUnreachable is true while every watcher waits for the backend.
	BackendUnreachable bool
	// Mailboxes are the registered mailboxes watched, INBOX first.
	Mailboxes []string
	// LastError is the account's latest failure (a lost connection, a
	// refused login, a failed catch-up look), without secrets; zero
	// LastErrorAt if none since the owner was made.
	LastError   string
	LastErrorAt time.Time
	// LastEvent is the latest event reported to the push stage; its At is
	// zero if none.
	LastEvent SeenEvent
}

// SeenEvent is an event an owner reported.
type SeenEvent struct {
	At      time.Time
	Mailbox string     // as the devices registered it
	Kind    event.Kind // KindNew or KindChanged
}

// maxErrorText bounds the error text kept per account.
const maxErrorText = 300

// accountStatus is the part of AccountStatus an account's goroutines
// record as they go: its watcher (state, errors), whoever applies its hints
// (events), the catch-up (errors). It has its own small mutex, so that
// Account reads it without waiting for the owner's work.
type accountStatus struct {
	mu        sync.Mutex
	state     State
	since     time.Time
	err       string
	errAt     time.Time
	lastEvent SeenEvent
}

func (s *accountStatus) setState(st State) {
	s.mu.Lock()
	s.state, s.since = st, time.Now()
	s.mu.Unlock()
}

func (s *accountStatus) failed(text string) {
	if len(text) > maxErrorText {
		text = text[:maxErrorText] + "..."
	}
	s.mu.Lock()
	s.err, s.errAt = text, time.Now()
	s.mu.Unlock()
}

func (s *accountStatus) sawEvent(mailbox string, kind event.Kind) {
	s.mu.Lock()
	s.lastEvent = SeenEvent{At: time.Now(), Mailbox: mailbox, Kind: kind}
	s.mu.Unlock()
}

// failed records err as the account's latest failure, with the secrets the
// manager knows (the master password) taken out, should a server echo one.
func (o *owner) failed(err error) {
	if err == nil {
		return
	}
	text := err.Error()
	if pw := o.m.opts.Watch.MasterPassword; pw != "" {
		text = strings.ReplaceAll(text, pw, "[redacted]")
	}
	o.status.failed(text)
}

// Account returns what the manager knows of user's account (the name is
// canonicalized as registrations are stored), and false when it has no
// owner: no registration, or not converged yet.
func (m *Manager) Account(user string) (AccountStatus, bool) {
	user = m.opts.Backend.CanonicalUser(user)
	m.mu.Lock()
	o := m.owners[user]
	hasConn := o != nil && o.conn != nil
	m.mu.Unlock()
	if o == nil {
		return AccountStatus{}, false
	}
	source := m.opts.Source
	if source == SourceAuto {
		source = SourceAuto + ": " + SourceNotify
		if m.noNotify.Load() {
			source = SourceAuto + ": " + SourceIdle
		}
	}
	a := AccountStatus{
		User:               user,
		Source:             source,
		Connection:         hasConn,
		BackendUnreachable: !m.gate.up(),
		Mailboxes:          append([]string(nil), o.snapshot()...),
	}
	s := &o.status
	s.mu.Lock()
	if hasConn {
		a.State, a.Since = s.state, s.since
	}
	a.LastError, a.LastErrorAt, a.LastEvent = s.err, s.errAt, s.lastEvent
	s.mu.Unlock()
	return a, true
}
