package watch

import (
	"context"

	"github.com/xapsproxy/xapsproxy/event"
)

type queuedHint struct {
	o *owner
	h event.Hint
}

// Hint hands a source's hint to the owner of its account. It never blocks:
// hints queue for the manager's hint workers, and when the queue is full
// the account is looked at by the catch-up instead, so nothing is lost. A
// hint for a user with no registrations is dropped. The user is matched
// after Backend.CanonicalUser, as registrations are stored.
func (m *Manager) Hint(h event.Hint) {
	h.User = m.opts.Backend.CanonicalUser(h.User)
	m.mu.Lock()
	o := m.owners[h.User]
	m.mu.Unlock()
	if o == nil {
		m.stats.hintsUnwatched.Add(1)
		return
	}
	select {
	case m.hints <- queuedHint{o, h}:
	default:
		m.stats.hintsOverflowed.Add(1)
		m.catchUp.add(h.User)
	}
}

// applyHints is a hint worker: it applies queued hints until ctx is done.
// Workers apply hints of different accounts in parallel; an owner's mutex
// keeps those of one account in turn.
func (m *Manager) applyHints(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case q := <-m.hints:
			q.o.apply(ctx, q.h)
		}
	}
}
