package push

import (
	"context"
	"slices"
	"time"

	"github.com/xapsproxy/xapsproxy/store"
)

// resolution is the registrations of the users of a batch of events, looked
// up by a goroutine of its own so that Run never waits for the store.
type resolution struct {
	batch map[eventKey]eventState
	regs  map[string][]store.Registration // by user
	err   error
}

// takeEvents takes the events Notify collected.
func (p *Pusher) takeEvents() map[eventKey]eventState {
	p.mu.Lock()
	defer p.mu.Unlock()
	batch := p.events
	if len(batch) == 0 {
		return nil
	}
	p.events = map[eventKey]eventState{}
	p.resolving = len(batch)
	return batch
}

// resolve looks up, in one query per few hundred users, the registrations
// of every user in batch. It runs on its own goroutine and touches no
// scheduling state.
func (p *Pusher) resolve(ctx context.Context, batch map[eventKey]eventState) resolution {
	users := make([]string, 0, len(batch))
	for k := range batch {
		users = append(users, k.user)
	}
	slices.Sort(users)
	users = slices.Compact(users)
	regs, err := p.store.RegistrationsOf(ctx, users)
	return resolution{batch: batch, regs: regs, err: err}
}

// apply folds a resolved batch into the jobs of the registrations that want
// each mailbox. On a store error the events are put back and looked up
// again after a backoff.
// At shutdown a failed look-up (its context was cancelled) is put back
// without more ado.
func (p *Pusher) apply(r resolution, now time.Time, shutdown bool) {
	if r.err != nil {
		p.putBack(r.batch)
		if !shutdown {
			p.storeErrors++
			p.storeRetryAt = now.Add(p.backoff(p.storeErrors))
			p.logger.Error("cannot look up registrations; will try again", "events", len(r.batch), "error", r.err)
		}
		return
	}
	p.storeErrors = 0
	byUser := map[string][]eventKey{}
	for k := range r.batch {
		byUser[k.user] = append(byUser[k.user], k)
	}
	for user, keys := range byUser {
		if !p.owns(user) {
			continue // released while looked up: its entries stay for the next owner
		}
		if p.ownsFn != nil {
			keys = p.dropStale(user, keys, r.batch)
		}
		regs := r.regs[user]
		for i := range regs {
			reg := &regs[i]
			var st eventState
			var names []string // as reg spells them
			var refs []outboxRef
			for _, k := range keys {
				name, ok := registeredName(reg, k.mailbox)
				if !ok {
					continue
				}
				es := r.batch[k]
				st.merge(es)
				names = append(names, name)
				refs = append(refs, outboxRef{k.user, k.mailbox, false, es.newID}, outboxRef{k.user, k.mailbox, true, es.changedID})
			}
			if len(names) > 0 {
				p.schedule(*reg, st, names, refs, now)
			}
		}
		for _, k := range keys {
			es := r.batch[k]
			p.unclaimed(outboxRef{k.user, k.mailbox, false, es.newID})
			p.unclaimed(outboxRef{k.user, k.mailbox, true, es.changedID})
		}
	}
	p.mu.Lock()
	p.resolving = 0
	p.jobCount = len(p.jobs)
	p.mu.Unlock()
}

// putBack returns a batch that could not be looked up to the events.
func (p *Pusher) putBack(batch map[eventKey]eventState) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.resolving = 0
	for k, st := range batch {
		cur := p.events[k]
		cur.merge(st)
		p.events[k] = cur
	}
}
