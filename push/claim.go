package push

import (
	"context"
	"fmt"
	"time"

	"github.com/xapsproxy/xapsproxy/store"
)

// Several instances share the accounts (package cluster): with Options.Owns
// set, a Pusher sends only for the users it owns. It reads no outbox at
// start; Claim takes a user's outbox entries when the user comes to this
// instance, and Release lets the user go without clearing its entries,
// which the next owner's Claim sends: one mail gives one push while
// ownership moves.
//
// Both hand their work to Run (ctl, in order), since the jobs and the
// outbox holds belong to it.

// ctlReq is a Claim's entries or a Release, for Run.
type ctlReq struct {
	user    string
	claim   bool
	entries []store.OutboxEntry // claim: the user's outbox
	done    chan struct{}       // release: closed once no push of user is in flight
}

// mailboxKind is an outbox entry's mailbox and kind, for claimFinished.
type mailboxKind struct {
	mailbox string
	changed bool
}

// owns reports whether this instance owns user (Options.Owns).
func (p *Pusher) owns(user string) bool {
	return p.ownsFn == nil || p.ownsFn(user)
}

// Claim takes user's entries in the store's outbox, to be sent as if they
// had just been reported; entries already scheduled here, or finished
// since Claim began, are left out. Call it once Options.Owns(user) is true,
// while Run runs (it waits for the entries finished so far to be written,
// then reads the store and returns; Run schedules the entries).
func (p *Pusher) Claim(ctx context.Context, user string) error {
	p.mu.Lock()
	p.claimOpen[user]++
	if p.claimFinished[user] == nil {
		p.claimFinished[user] = map[mailboxKind]int64{}
	}
	p.mu.Unlock()
	// What was finished before the Claim opened must be out of the
	// store before it is read (an event of user may have been pushed
	// already: Owns was true before OnOwn); what is finished from now on
	// is noted in claimFinished. finish1 queues an entry before it notes
	// it, so each is caught by one or the other.
	err := p.rec.waitWritten(ctx, p.rec.queued())
	var entries []store.OutboxEntry
	if err == nil {
		entries, err = p.store.OutboxOf(ctx, user)
	}
	p.mu.Lock()
	if err != nil {
		p.closeClaim(user)
		p.mu.Unlock()
		return fmt.Errorf("claim the outbox of %s: %w", user, err)
	}
	p.ctl = append(p.ctl, ctlReq{user: user, claim: true, entries: entries})
	p.mu.Unlock()
	p.poke()
	return nil
}

// Release drops every push of user waiting here, leaving their entries in
// the store's outbox, waits for the pushes of user in flight to be answered
// and for the outbox entries they finished to be written, so that the next
// owner's Claim sends what is owed and only that. Call it once
// Options.Owns(user) is false, while Run runs; it returns ctx's error if
// ctx is done first.
func (p *Pusher) Release(ctx context.Context, user string) error {
	done := make(chan struct{})
	p.mu.Lock()
	p.ctl = append(p.ctl, ctlReq{user: user, done: done})
	p.mu.Unlock()
	p.poke()
	select {
	case <-done:
	case <-ctx.Done():
		return fmt.Errorf("release %s: %w", user, ctx.Err())
	}
	if err := p.rec.waitWritten(ctx, p.rec.queued()); err != nil {
		return fmt.Errorf("release %s: outbox entries not written: %w", user, err)
	}
	return nil
}

func (p *Pusher) poke() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// closeClaim ends one Claim of user; p.mu is held. The user's finished
// entries stay noted until Release: an event of an entry Claim took and
// sent may still come (from the watcher that committed it).
func (p *Pusher) closeClaim(user string) {
	if p.claimOpen[user]--; p.claimOpen[user] <= 0 {
		delete(p.claimOpen, user)
	}
}

// noteFinished remembers, from a Claim of r's user to its Release, that r
// was finished, so that neither the Claim nor a late event takes it (or an
// older entry of the same mailbox and kind, which r replaced in the store)
// back.
func (p *Pusher) noteFinished(r outboxRef) {
	if p.ownsFn == nil {
		return
	}
	p.mu.Lock()
	if m := p.claimFinished[r.user]; m != nil {
		k := mailboxKind{r.mailbox, r.changed}
		m[k] = max(m[k], r.id)
	}
	p.mu.Unlock()
}

// runCtl carries out the Claims and Releases queued; Run's goroutine.
func (p *Pusher) runCtl(now time.Time) {
	p.mu.Lock()
	reqs := p.ctl
	p.ctl = nil
	p.mu.Unlock()
	for _, r := range reqs {
		if r.claim {
			p.claimEntries(r.user, r.entries, now)
		} else {
			p.releaseUser(r.user, r.done)
		}
	}
}

// claimEntries merges a Claim's entries into the events, as loadOutbox does
// for the whole outbox.
func (p *Pusher) claimEntries(user string, entries []store.OutboxEntry, now time.Time) {
	if !p.owns(user) {
		p.mu.Lock()
		p.closeClaim(user)
		if p.claimOpen[user] == 0 {
			delete(p.claimFinished, user)
		}
		p.mu.Unlock()
		return // released meanwhile: the next owner claims them
	}
	if p.releasing[user] != nil {
		// Owned again while a push of an earlier ownership is in flight
		// (its Release gave up waiting): the job is kept after all.
		for k, j := range p.jobs {
			if k.user == user && j.released {
				j.released = false
				p.releaseCounted(user)
			}
		}
	}
	taken, expired := 0, 0
	p.mu.Lock()
	finished := p.claimFinished[user]
	for _, e := range entries {
		if p.refs[e.ID] > 0 || finished[mailboxKind{e.Mailbox, e.Changed}] >= e.ID || p.resolvingHas(e) {
			continue
		}
		taken++
		if p.owe(e, now) {
			expired++
		}
	}
	p.closeClaim(user)
	p.mu.Unlock()
	if taken > 0 {
		p.logger.Info("sending the pushes owed to an account taken over", "user", user, "entries", taken-expired, "expired", expired)
	}
}

// dropStale clears, in the batch's events of user, the outbox entries a
// job already holds or that were finished since user was claimed (or that
// a finished one replaced): an event of an entry a Claim took comes from
// the watcher that committed it, and must not push it again. It returns
// the keys with something left to push.
func (p *Pusher) dropStale(user string, keys []eventKey, batch map[eventKey]eventState) []eventKey {
	p.mu.Lock()
	defer p.mu.Unlock()
	fin := p.claimFinished[user]
	out := keys[:0]
	for _, k := range keys {
		es := batch[k]
		if es.newID != 0 && (p.refs[es.newID] > 0 || fin[mailboxKind{k.mailbox, false}] >= es.newID) {
			es.isNew, es.newID = false, 0
		}
		if es.changedID != 0 && (p.refs[es.changedID] > 0 || fin[mailboxKind{k.mailbox, true}] >= es.changedID) {
			es.changedAt, es.changedID = time.Time{}, 0
		}
		batch[k] = es
		if es.isNew || !es.changedAt.IsZero() {
			out = append(out, k)
		}
	}
	return out
}

// resolvingHas reports whether the batch being looked up holds e (or a
// newer entry of its mailbox and kind): it reaches a job when it is applied.
func (p *Pusher) resolvingHas(e store.OutboxEntry) bool {
	st, ok := p.inResolve[eventKey{e.User, e.Mailbox}]
	if !ok {
		return false
	}
	if e.Changed {
		return st.changedID >= e.ID
	}
	return st.newID >= e.ID
}

// releaseUser forgets user's events and waiting jobs, leaving their outbox
// entries in the store; jobs in flight are forgotten when they come back
// (finish), and done is closed after the last.
func (p *Pusher) releaseUser(user string, done chan struct{}) {
	p.mu.Lock()
	for k := range p.events {
		if k.user == user {
			delete(p.events, k)
		}
	}
	if p.claimOpen[user] == 0 {
		delete(p.claimFinished, user)
	}
	p.mu.Unlock()
	running := 0
	for k, j := range p.jobs {
		if k.user != user {
			continue
		}
		if j.running {
			if !j.released { // not counted by an earlier Release
				j.released = true
				running++
			}
			continue
		}
		p.forget(k, j)
	}
	p.countJobs()
	w := p.releasing[user]
	if running == 0 && w == nil {
		close(done)
		return
	}
	if p.releasing == nil {
		p.releasing = map[string]*releaseWait{}
	}
	if w == nil {
		w = &releaseWait{}
		p.releasing[user] = w
	}
	w.running += running
	w.done = append(w.done, done)
}

// releaseWait is a Release waiting for pushes in flight.
type releaseWait struct {
	running int
	done    []chan struct{}
}

// releasedBack handles a job of a released user whose push came back:
// whatever it still holds is forgotten, and the Release waiting for it is
// told once the user has none in flight.
func (p *Pusher) releasedBack(k jobKey) {
	if j := p.jobs[k]; j != nil && !j.running {
		p.forget(k, j)
		p.countJobs()
	}
	p.releaseCounted(k.user)
}

// releaseCounted counts one job of user in flight at a Release as back,
// and tells the Releases waiting once none is left.
func (p *Pusher) releaseCounted(user string) {
	w := p.releasing[user]
	if w == nil {
		return
	}
	if w.running--; w.running <= 0 {
		for _, d := range w.done {
			close(d)
		}
		delete(p.releasing, user)
	}
}

// endReleases tells every Release waiting that nothing is in flight any
// more: Run is returning.
func (p *Pusher) endReleases() {
	for u, w := range p.releasing {
		for _, d := range w.done {
			close(d)
		}
		delete(p.releasing, u)
	}
}

// forget drops j without finishing its outbox entries: they stay in the
// store for the user's next owner.
func (p *Pusher) forget(k jobKey, j *job) {
	for _, list := range [][]outboxRef{j.outbox, j.againOut} {
		for _, r := range list {
			if r.id == 0 {
				continue
			}
			if n := p.refs[r.id] - 1; n > 0 {
				p.refs[r.id] = n
			} else {
				delete(p.refs, r.id)
			}
		}
	}
	delete(p.jobs, k)
}
