package push

import (
	"container/heap"
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/xapsproxy/xapsproxy/store"
)

// jobKey identifies a registration, as the store does.
type jobKey struct{ user, token string }

// job is the push state of one registration. At most one push per
// registration is waiting, in flight or retrying at any time; events that
// arrive meanwhile are folded into it.
//
// New mail makes the job due at once. A change makes it due ChangeDelay
// after the latest change, unless new mail already made it due: a push
// carries every mailbox with news since the last one, so a change waiting
// for quiet goes out with new mail that comes first, and not again later.
type job struct {
	reg       store.Registration // latest copy, refreshed by each event
	mailboxes mailboxSet         // registered names the current notification is about
	due       time.Time          // when to send next (meaningless while running)
	urgent    bool               // new mail is waiting: due is not pushed back by changes
	attempt   int                // failed attempts of the current notification; > 0 = retrying
	expires   time.Time          // apns-expiration of the current notification; retries stop here
	running   bool               // a worker is sending it
	again     bool               // an event arrived while running: push again afterwards
	againNew  bool               // ... and it was new mail
	againAt   time.Time          // ... latest change time, for the quiet delay
	againIn   mailboxSet         // ... in these mailboxes
	gen       uint64             // of its current entry in the due heap
	outbox    []outboxRef        // outbox entries the current notification is about
	againOut  []outboxRef        // ... and those of the events that came in flight
	released  bool               // Release came while it was in flight (claim.go)
}

// outcome is what a worker hands back to Run.
type outcome struct {
	key   jobKey
	res   Result
	probe bool // sent through the closed gate, to see if APNs is back
}

// Run sends pushes until ctx is done. All scheduling state belongs to the
// goroutine running Run. Beside it run: at most MaxConcurrent worker
// goroutines, one per push in flight; one goroutine at a time looking up
// the registrations of the events reported (so the scheduler never waits
// for the store); and the recorder, which writes outcomes and finished
// outbox entries in batches. First it takes what the store's outbox holds.
// When ctx is done it cancels the workers, waits for every goroutine to
// exit (the recorder writes what is left first), and returns nil. Work
// still pending is kept for a later Run, and in the outbox for a later
// process. Run returns an error only if another Run is active.
func (p *Pusher) Run(ctx context.Context) error {
	if !p.running.CompareAndSwap(false, true) {
		return errors.New("push: Run is already running")
	}
	defer p.running.Store(false)

	workCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	pool := newWorkers(p.maxConcurrent, &p.workers)
	done := make(chan outcome, p.maxConcurrent) // workers never block on it
	inflight := 0
	timer := p.clock.NewTimer()
	defer timer.Stop()

	recCtx, stopRec := context.WithCancel(context.WithoutCancel(ctx))
	recDone := make(chan struct{})
	go func() {
		defer close(recDone)
		p.rec.run(recCtx)
	}()
	defer func() {
		stopRec()
		<-recDone
	}()

	resolved := make(chan resolution, 1)
	resolving := false
	outboxRead := p.loadOutbox(ctx, p.clock.Now())
	for {
		now := p.clock.Now()
		if p.reloaded.Swap(false) {
			p.gate.recheckNow(now)
		}
		if !outboxRead && !now.Before(p.storeRetryAt) {
			if outboxRead = p.loadOutbox(ctx, now); !outboxRead {
				p.storeErrors++
				p.storeRetryAt = now.Add(p.backoff(p.storeErrors))
			}
		}
		p.runCtl(now)
		if !resolving && !now.Before(p.storeRetryAt) {
			if batch := p.takeEvents(); len(batch) > 0 {
				resolving = true
				p.inResolve = batch
				go func() { resolved <- p.resolve(ctx, batch) }()
			}
		}
		inflight += p.dispatch(workCtx, now, inflight, pool, done)
		if next := p.nextWake(now); next.IsZero() {
			timer.Stop()
		} else {
			timer.Reset(next)
		}
		select {
		case <-ctx.Done():
			cancel()
			pool.close() // what is queued runs, and fails at once
			for ; inflight > 0; inflight-- {
				p.finish(<-done, p.clock.Now(), true)
			}
			if resolving {
				p.apply(<-resolved, p.clock.Now(), true)
			}
			p.runCtl(p.clock.Now())
			p.endReleases()
			p.countJobs()
			return nil
		case <-p.wake:
		case r := <-resolved:
			resolving = false
			p.inResolve = nil
			p.apply(r, p.clock.Now(), false)
		case out := <-done:
			inflight--
			p.finish(out, p.clock.Now(), false)
		case <-timer.C():
		}
	}
}

// schedule folds events st in the mailboxes names into the job of reg: new
// mail is due at once, a change ChangeDelay after the latest change unless
// new mail is already waiting. A job in flight is marked to go again; a
// retrying job takes the mailboxes into its next attempt, and its
// notification gets a fresh expiration.
func (p *Pusher) schedule(reg store.Registration, st eventState, names []string, refs []outboxRef, now time.Time) {
	k := jobKey{reg.User, reg.DeviceToken}
	j := p.jobs[k]
	if j == nil {
		j = &job{}
		p.jobs[k] = j
		p.jobsPeak = max(p.jobsPeak, len(p.jobs))
	}
	if j.reg.LastPush.After(reg.LastPush) {
		reg.LastPush = j.reg.LastPush // not yet written by the recorder
	}
	j.reg = reg
	switch {
	case j.running:
		j.again = true
		j.againNew = j.againNew || st.isNew
		if st.changedAt.After(j.againAt) {
			j.againAt = st.changedAt
		}
		j.againIn.add(names...)
		for _, r := range refs {
			p.take(&j.againOut, r)
		}
	case j.attempt > 0:
		j.expires = now.Add(p.expiration)
		j.mailboxes.add(names...)
		for _, r := range refs {
			p.take(&j.outbox, r)
		}
	default:
		j.mailboxes.add(names...)
		for _, r := range refs {
			p.take(&j.outbox, r)
		}
		if p.setDue(j, st.isNew, st.changedAt, now) {
			p.queue(k, j)
		}
	}
}

// setDue makes j due for new mail (at once) or a change (ChangeDelay after
// it); it reports whether j.due changed.
func (p *Pusher) setDue(j *job, isNew bool, changedAt, now time.Time) bool {
	switch {
	case isNew:
		if j.urgent && j.due.Equal(now) {
			return false
		}
		j.urgent, j.due = true, now
		return true
	case !j.urgent:
		due := changedAt.Add(p.changeDelay)
		if guard := j.reg.LastPush.Add(p.changeEvery); p.changeEvery > 0 && !j.reg.LastPush.IsZero() && guard.After(due) {
			due = guard // the storm guard: one change push per interval
		}
		if due.After(j.due) {
			j.due = due
			return true
		}
	}
	return false
}

// dispatch hands due jobs to the workers, earliest first, until
// MaxConcurrent are in flight, and returns how many it started. It takes them from the due heap, so its
// cost does not grow with the jobs waiting. While the gate is closed it
// starts one probe when one is due, and nothing else.
func (p *Pusher) dispatch(ctx context.Context, now time.Time, inflight int, pool *workers, done chan<- outcome) int {
	started := 0
	for inflight+started < p.maxConcurrent {
		e, ok := p.top()
		if !ok || e.due.After(now) {
			break
		}
		probe := p.gate.closed()
		if probe && !p.gate.probeDue(now) {
			break
		}
		heap.Pop(&p.due)
		k, j := e.key, p.jobs[e.key]
		if !p.owns(k.user) {
			// Lost before Release came (a lease not renewed in time):
			// the next owner sends it.
			p.forget(k, j)
			p.countJobs()
			continue
		}
		if j.attempt > 0 && now.After(j.expires) {
			// Held (the gate was closed) past its expiration.
			p.logger.Error("giving up: notification expired before APNs accepted it",
				"user", j.reg.User, "token", store.ShortToken(j.reg.DeviceToken), "attempts", j.attempt)
			p.done(k, j, now)
			p.countJobs()
			continue
		}
		if probe {
			p.gate.probing = true
		}
		if j.attempt == 0 {
			j.expires = now.Add(p.expiration)
		}
		kind := PushChanges
		switch {
		case j.attempt > 0:
			kind = PushRetry
		case j.urgent:
			kind = PushNewMail
		}
		j.running, j.urgent = true, false
		reg, n := j.reg, p.notification(j.reg, j.expires, j.mailboxes.list())
		started++
		pool.do(func() { done <- outcome{k, p.pushOnce(ctx, reg, n, true, kind), probe} }, inflight+started)
		if probe {
			break
		}
	}
	return started
}

// finish applies a worker's outcome to its job. At shutdown, a push cut
// short by the cancelled context is left due, to be sent by a later Run.
func (p *Pusher) finish(out outcome, now time.Time, shutdown bool) {
	j := p.jobs[out.key]
	if j == nil {
		return
	}
	j.running = false
	if j.released {
		defer p.releasedBack(out.key)
	}
	res := out.res
	log := regLog{p.logger, res.User, res.DeviceToken, res.AccountID}
	if shutdown && res.Err != nil {
		if out.probe {
			p.gate.probing = false
		}
	} else if p.observe(res, out.probe, now) {
		defer p.reopen(now) // once j is settled too
	}
	switch {
	case shutdown && res.Err != nil:
		// Sent first thing by the next Run, with what came in flight.
		j.due = now
		p.foldAgain(j)
		p.queue(out.key, j)
	case res.Action == Pruned:
		// DeleteToken removed the token for every user: forget all its jobs
		// (the others in flight finish on their own).
		p.drop(out.key, j)
		for k, other := range p.jobs {
			if k.token == out.key.token && !other.running {
				p.drop(k, other)
			}
		}
	case res.Action == Retry:
		if j.again {
			// Events came while it was in flight: they ride on the retry,
			// which lives as long as they would on their own.
			j.expires = now.Add(p.expiration)
		}
		j.attempt++
		next := now.Add(p.backoff(j.attempt))
		if ra := res.Response.RetryAfter; ra > 0 && now.Add(ra).After(next) {
			next = now.Add(ra) // APNs asked for this much
		}
		if p.gate.closed() && answerScope(res.Response, res.Err) != scopeOwn && !next.After(j.expires) {
			next = now // held by the gate, sent when APNs is back
		}
		if next.After(j.expires) {
			log.log(context.Background(), slog.LevelError, "giving up: notification expired before APNs accepted it",
				"status", res.Outcome(), "attempts", j.attempt)
			p.done(out.key, j, now)
			break
		}
		j.due = next
		p.foldAgain(j) // events that came in flight ride on the retry
		p.queue(out.key, j)
	default: // Delivered, Rejected
		p.done(out.key, j, now)
	}
	p.countJobs()
}

// done ends the current notification of j: the job goes away unless events
// came in while it was in flight, in which case they are scheduled afresh.
func (p *Pusher) done(k jobKey, j *job, now time.Time) {
	j.attempt = 0
	j.reg.LastPush = now // as the recorder stores it, for the storm guard
	p.releaseAll(&j.outbox)
	if !j.again {
		delete(p.jobs, k)
		return
	}
	isNew, at := j.againNew, j.againAt
	j.mailboxes, j.againIn = j.againIn, nil
	j.outbox, j.againOut = j.againOut, nil
	j.again, j.againNew, j.againAt = false, false, time.Time{}
	j.urgent, j.due = false, time.Time{}
	p.setDue(j, isNew, at, now)
	p.queue(k, j)
}

// foldAgain makes the events that came while j was in flight part of its
// current notification, which is to be sent again.
func (p *Pusher) foldAgain(j *job) {
	j.mailboxes.addSet(j.againIn)
	for _, r := range j.againOut {
		p.take(&j.outbox, r)
		p.release(r) // the hold of againOut, now in outbox
	}
	j.againOut = nil
	j.again, j.againNew, j.againAt, j.againIn = false, false, time.Time{}, nil
}

// drop forgets j, whose registration is gone, with its outbox holds.
func (p *Pusher) drop(k jobKey, j *job) {
	p.releaseAll(&j.outbox)
	p.releaseAll(&j.againOut)
	delete(p.jobs, k)
}

// nextWake is the earliest future time Run must wake for: a job becoming due
// or a store retry. Jobs already due but waiting for a free worker are
// started when a worker finishes, so they need no timer.
func (p *Pusher) nextWake(now time.Time) time.Time {
	var next time.Time
	if e, ok := p.top(); ok {
		switch {
		case p.gate.closed():
			if !p.gate.probing {
				next = later(e.due, p.gate.probeAt)
			}
		case e.due.After(now):
			next = e.due
		}
	}
	if !next.After(now) && p.gate.closed() {
		next = time.Time{} // a probe due now was started, or is in flight
	}
	if t := p.storeRetryAt; t.After(now) && (next.IsZero() || t.Before(next)) {
		next = t
	}
	return next
}

// backoff is the delay before retry number attempt (1, 2, ...): RetryBase
// doubled per attempt, capped at RetryMax, with "equal jitter" (a random
// point in the upper half) so that many devices do not retry in lockstep.
func (p *Pusher) backoff(attempt int) time.Duration {
	d := p.retryMax
	if attempt < 32 {
		if b := p.retryBase << (attempt - 1); b > 0 && b < d {
			d = b
		}
	}
	half := d / 2
	return half + rand.N(d-half+1)
}

func (p *Pusher) countJobs() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.jobCount = len(p.jobs)
	p.shrink()
}

// shrinkAfter is the size past which the scheduler's maps and heap are
// made anew once empty: Go's maps never give back the room a burst took
// (100 000 pushes at once left 20 MiB behind).
const shrinkAfter = 4096

// shrink drops the storage a burst grew, once nothing is waiting.
func (p *Pusher) shrink() {
	if len(p.jobs) > 0 {
		return
	}
	if p.jobsPeak > shrinkAfter {
		p.jobs, p.jobsPeak = map[jobKey]*job{}, 0
	}
	if len(p.refs) == 0 && p.refsPeak > shrinkAfter {
		p.refs, p.refsPeak = map[int64]int{}, 0
	}
	if len(p.due) == 0 && cap(p.due) > shrinkAfter {
		p.due = nil
	}
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
