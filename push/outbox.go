package push

import (
	"context"
	"time"

	"github.com/xapsproxy/xapsproxy/store"
)

// The outbox (see store.OutboxEntry) is how a push survives a crash: the
// owner of an account commits each event with the mailbox state that
// caused it, and the Pusher removes the entry only when every push it
// caused has been answered by APNs (or expired). At start, Run takes what
// is in the outbox as if it had just been reported.
//
// The store keeps one entry per user, mailbox and kind, a newer replacing
// an older with a higher id. A job holds the ids of the entries its
// notification is about (at most one per mailbox and kind: a newer id
// replaces an older one, which the store has already replaced); the Pusher
// counts, per id, the jobs holding it, and when the last lets go the id is
// handed to the recorder to be removed.

// outboxRef is an outbox entry a job's notification is about.
type outboxRef struct {
	user    string
	mailbox string // as reported (the event's Mailbox)
	changed bool
	id      int64
}

func (r outboxRef) entry() store.OutboxEntry {
	return store.OutboxEntry{ID: r.id, User: r.user, Mailbox: r.mailbox, Changed: r.changed}
}

// take adds r to list, unless list holds the same entry or a newer one of
// the same mailbox and kind; a newer r replaces an older one, which is let
// go.
func (p *Pusher) take(list *[]outboxRef, r outboxRef) {
	if r.id == 0 {
		return
	}
	for i, e := range *list {
		if e.mailbox != r.mailbox || e.changed != r.changed {
			continue
		}
		if r.id <= e.id {
			return
		}
		(*list)[i].id = r.id
		p.refs[r.id]++
		p.release(e)
		return
	}
	*list = append(*list, r)
	p.refs[r.id]++
	p.refsPeak = max(p.refsPeak, len(p.refs))
}

// release lets go of one hold on id; the last one hands it to the recorder
// to be removed from the outbox.
func (p *Pusher) release(r outboxRef) {
	if r.id == 0 {
		return
	}
	if n := p.refs[r.id] - 1; n > 0 {
		p.refs[r.id] = n
		return
	}
	delete(p.refs, r.id)
	p.finish1(r)
}

// finish1 hands id to the recorder, and remembers it until the outbox has
// been read, so that reading it does not take back what was just done.
func (p *Pusher) finish1(r outboxRef) {
	if !p.outboxLoaded {
		if p.finishedEarly == nil {
			p.finishedEarly = map[int64]bool{}
		}
		p.finishedEarly[r.id] = true
	}
	p.rec.finished(r.entry())
	p.noteFinished(r) // after: see Claim
}

// releaseAll lets go of every id in list and empties it.
func (p *Pusher) releaseAll(list *[]outboxRef) {
	for _, e := range *list {
		p.release(e)
	}
	*list = nil
}

// unclaimed hands id to the recorder if no job took it (nobody registered
// the mailbox, or a newer entry already covers it).
func (p *Pusher) unclaimed(r outboxRef) {
	if r.id != 0 && p.refs[r.id] == 0 {
		p.finish1(r)
	}
}

// loadOutbox takes the entries in the store's outbox as events, so that
// what was pending when the process stopped is sent now. It reads it once
// in the Pusher's life (a later Run has the jobs in memory), and leaves out
// entries that jobs hold or that were finished meanwhile, which are the
// ones of events reported since. Entries older than Expiration are
// dropped: APNs would not deliver them any more. It reports whether the
// outbox was read.
func (p *Pusher) loadOutbox(ctx context.Context, now time.Time) bool {
	if p.outboxLoaded {
		return true
	}
	if p.ownsFn != nil {
		// Claim takes each owned user's entries (claim.go).
		p.outboxLoaded, p.finishedEarly = true, nil
		return true
	}
	entries, err := p.store.Outbox(ctx)
	if err != nil {
		if ctx.Err() == nil {
			p.logger.ErrorContext(ctx, "cannot read the outbox; will try again", "error", err)
		}
		return false
	}
	expired, taken := 0, 0
	p.mu.Lock()
	for _, e := range entries {
		if p.refs[e.ID] > 0 || p.finishedEarly[e.ID] {
			continue
		}
		taken++
		if p.owe(e, now) {
			expired++
		}
	}
	p.mu.Unlock()
	p.outboxLoaded, p.finishedEarly = true, nil
	if taken > 0 {
		p.logger.InfoContext(ctx, "sending the pushes left in the outbox", "entries", taken-expired, "expired", expired)
	}
	return true
}

// owe takes an entry read from the outbox as if its event had just been
// reported, merged into the events; one past the expiration is finished
// instead, and owe reports that. p.mu is held.
func (p *Pusher) owe(e store.OutboxEntry, now time.Time) (expired bool) {
	if now.Sub(e.At) > p.expiration {
		p.rec.finished(e)
		return true
	}
	st := eventState{isNew: !e.Changed, newID: e.ID}
	if e.Changed {
		st = eventState{changedAt: e.At, changedID: e.ID}
	}
	k := eventKey{e.User, e.Mailbox}
	cur := p.events[k]
	cur.merge(st)
	p.events[k] = cur
	return false
}
