package cluster

import "time"

// callParallel bounds the OnOwn and OnLose calls at once.
const callParallel = 64

// The callbacks run in goroutines of their own, never in the loop: OnLose
// may wait for pushes in flight (tens of seconds), and the heartbeat and
// the leases must be renewed meanwhile. The calls for one user run one
// after another, in the order queued; at most callParallel run at once.

// queueLocked runs fn for user once the user's previous callback returned.
// lose: fn calls OnLose; until it returned, user is not owned, neither
// claimed nor adopted again (c.losing). c.mu is held.
func (c *Cluster) queueLocked(user string, lose bool, fn func()) {
	if lose {
		c.losing[user]++
	}
	prev := c.calls[user]
	done := make(chan struct{})
	c.calls[user] = done
	c.callers.Go(func() {
		if prev != nil {
			<-prev
		}
		c.sem <- struct{}{}
		c.mu.Lock()
		abandon := c.abandon // tests: a killed process calls nothing
		c.mu.Unlock()
		if !abandon {
			fn()
		}
		<-c.sem
		c.mu.Lock()
		if lose {
			if c.losing[user]--; c.losing[user] == 0 {
				delete(c.losing, user)
			}
		}
		if c.calls[user] == done {
			delete(c.calls, user)
		}
		c.mu.Unlock()
		close(done)
	})
}

// ownLocked calls OnOwn for users, asynchronously. c.mu is held.
func (c *Cluster) ownLocked(users []string) {
	if c.opts.OnOwn == nil {
		return
	}
	for _, u := range users {
		c.queueLocked(u, false, func() {
			if c.stillOwned(u) {
				c.opts.OnOwn(u)
			}
		})
	}
}

// stillOwned reports whether an OnOwn queued for user should still
// run: not once the stop began (a backlog of slow OnOwn must not hold Run
// up past stopTimeout), nor if user is no longer owned (its OnLose follows,
// harmless for a user never taken up). It takes c.mu.
func (c *Cluster) stillOwned(user string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.stopping && c.callCtx.Err() == nil && c.owner(user, time.Now())
}

// loseLocked calls OnLose for user, whose lease was already forgotten,
// asynchronously. c.mu is held.
func (c *Cluster) loseLocked(user string) {
	if c.opts.OnLose == nil {
		return
	}
	c.queueLocked(user, true, func() { c.opts.OnLose(c.callCtx, user) })
}

// drainLocked starts handing user's lease l over: Owns(user) is false from
// now on, but the lease stays held and renewed until OnLose returned; then
// the loop deletes it (releaseDone). c.mu is held.
func (c *Cluster) drainLocked(user string, l *lease) {
	l.draining = true
	c.queueLocked(user, true, func() {
		if c.opts.OnLose != nil {
			c.opts.OnLose(c.callCtx, user)
		}
		c.mu.Lock()
		l.released = true
		c.mu.Unlock()
		select {
		case c.freed <- struct{}{}:
		default:
		}
	})
}

// expire forgets the leases whose local deadline passed: their renewal
// failed, and another instance may take them soon. OnLose is called for
// those not being handed over already.
func (c *Cluster) expire() {
	c.mu.Lock()
	gone := c.expireLocked(time.Now())
	c.mu.Unlock()
	if gone > 0 {
		c.log.Warn("leases could not be renewed in time; giving the accounts up", "accounts", gone)
	}
}

// expireLocked is expire without the log; it returns how many leases were
// lost. c.mu is held.
func (c *Cluster) expireLocked(now time.Time) int {
	gone := 0
	for u, l := range c.owned {
		if now.Before(l.validUntil) {
			continue
		}
		delete(c.owned, u)
		delete(c.byKey, l.key)
		if !l.draining {
			gone++
			c.loseLocked(u)
		}
	}
	c.stats.Lost += uint64(gone)
	return gone
}
