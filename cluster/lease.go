package cluster

import (
	"context"
	"fmt"
	"time"
)

// claimChunk bounds the users of one claim statement.
const claimChunk = 5000

const (
	heartbeatSQL = `
WITH hb AS (
	INSERT INTO xapsproxy_instances (id, expires) VALUES ($1, now() + $2 * interval '1 millisecond')
	ON CONFLICT (id) DO UPDATE SET expires = EXCLUDED.expires
	RETURNING id
)
SELECT id FROM xapsproxy_instances WHERE expires > now() AND id <> $1
UNION SELECT id FROM hb`
	// Every statement that writes leases locks its rows in user_key
	// order, so that a renewal, a claim and a release of overlapping
	// rows by different instances wait for each other instead of
	// deadlocking (SQLSTATE 40P01, seen with three instances).
	renewSQL = `
WITH locked AS (SELECT user_key FROM xapsproxy_leases WHERE owner = $1 ORDER BY user_key FOR UPDATE)
UPDATE xapsproxy_leases l SET expires = now() + $2 * interval '1 millisecond'
FROM locked WHERE l.user_key = locked.user_key AND l.owner = $1 RETURNING l.user_key, l.user_name`
	// claimSQL takes a lease that is free, expired by the database's
	// clock, or already ours; a lease another instance holds is left.
	claimSQL = `
INSERT INTO xapsproxy_leases AS l (user_key, user_name, owner, expires)
SELECT k, n, $1, now() + $2 * interval '1 millisecond' FROM unnest($3::bytea[], $4::bytea[]) AS t(k, n) ORDER BY k
ON CONFLICT (user_key) DO UPDATE SET owner = EXCLUDED.owner, user_name = EXCLUDED.user_name, expires = EXCLUDED.expires
WHERE l.expires < now() OR l.owner = EXCLUDED.owner
RETURNING user_key`
	releaseSQL = `
WITH locked AS (SELECT user_key FROM xapsproxy_leases WHERE owner = $1 AND user_key = ANY($2::bytea[]) ORDER BY user_key FOR UPDATE)
DELETE FROM xapsproxy_leases l USING locked WHERE l.user_key = locked.user_key AND l.owner = $1`
	leaveSQL = `DELETE FROM xapsproxy_instances WHERE id = $1 OR expires < now() - interval '1 day'`
)

func (c *Cluster) ttlMillis() int64 { return c.opts.TTL.Milliseconds() }

// step renews this instance's heartbeat and leases, then rebalances: it
// starts handing over the accounts whose desired owner is another live
// instance (or that have no registrations any more) and claims those it
// should own. It waits for no OnOwn or OnLose. It
// reports whether the heartbeat was renewed. Every round trip is bounded
// by Period, so the local deadlines are looked at again soon.
func (c *Cluster) step(ctx context.Context) bool {
	start := time.Now()
	live, err := c.heartbeat(ctx)
	if err != nil {
		if ctx.Err() == nil {
			c.log.Warn("cannot renew the heartbeat", "error", err)
		}
		return false
	}
	if err := c.renew(ctx, start); err != nil {
		if ctx.Err() == nil {
			c.log.Warn("cannot renew the leases", "error", err)
		}
		return true
	}
	c.expire()

	c.mu.Lock()
	c.live = live
	pending := c.claim
	c.claim = map[string]struct{}{}
	resync := c.resync
	c.resync = false
	c.mu.Unlock()

	if f := c.opts.OnResync; resync && (f != nil || c.opts.OnSync != nil) {
		if f == nil {
			f = c.opts.OnSync
		}
		for _, u := range c.Owned() {
			f(u)
		}
	}

	uctx, cancel := context.WithTimeout(ctx, c.opts.Period)
	users, err := c.opts.Users(uctx)
	cancel()
	if err != nil {
		if ctx.Err() == nil {
			c.log.Warn("cannot list the users; claiming only those notified", "error", err)
		}
		users = nil
	}
	want := make(map[string]bool, len(users)+len(pending))
	for _, u := range users {
		want[u] = desired(u, live) == c.id
	}
	for u := range pending {
		want[u] = desired(u, live) == c.id
	}
	var give, take []string
	c.mu.Lock()
	for u, l := range c.owned {
		if l.draining {
			continue // being handed over already
		}
		mine, listed := want[u]
		if (listed && !mine) || (!listed && err == nil) {
			give = append(give, u)
		}
	}
	for u, mine := range want {
		if mine && c.owned[u] == nil && c.losing[u] == 0 {
			take = append(take, u)
		}
	}
	c.mu.Unlock()
	if len(give) > 0 {
		c.handOver(give)
	}
	if len(take) > 0 {
		c.claimUsers(ctx, take)
	}
	return true
}

// claimPending claims the users notifications named for this instance,
// without a whole rebalance.
func (c *Cluster) claimPending(ctx context.Context) {
	c.mu.Lock()
	var take []string
	for u := range c.claim {
		if c.owned[u] == nil && c.losing[u] == 0 {
			take = append(take, u)
		}
	}
	c.claim = map[string]struct{}{}
	c.mu.Unlock()
	if len(take) > 0 {
		c.claimUsers(ctx, take)
	}
}

// heartbeat renews this instance's row and returns the live instances.
func (c *Cluster) heartbeat(ctx context.Context) ([]string, error) {
	qctx, cancel := context.WithTimeout(ctx, c.opts.Period)
	defer cancel()
	rows, err := c.opts.Pool.Query(qctx, heartbeatSQL, c.id, c.ttlMillis())
	if err != nil {
		return nil, fmt.Errorf("heartbeat: %w", err)
	}
	defer rows.Close()
	var live []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("heartbeat: %w", err)
		}
		live = append(live, id)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("heartbeat: %w", err)
	}
	return live, nil
}

// renew extends every lease of this instance in one statement. A lease the
// database no longer gives this instance is lost; one it holds that this
// instance did not know of (a claim whose answer was lost) is adopted, and
// handed over by the rebalance if another should own it. One renewed past
// its local deadline is lost and owned again (OnLose, then OnOwn).
func (c *Cluster) renew(ctx context.Context, start time.Time) error {
	qctx, cancel := context.WithTimeout(ctx, c.opts.Period)
	defer cancel()
	rows, err := c.opts.Pool.Query(qctx, renewSQL, c.id, c.ttlMillis())
	if err != nil {
		return fmt.Errorf("renew leases: %w", err)
	}
	defer rows.Close()
	held := map[userKey]string{}
	for rows.Next() {
		var k, n []byte
		if err := rows.Scan(&k, &n); err != nil {
			return fmt.Errorf("renew leases: %w", err)
		}
		held[userKey(k)] = string(n)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("renew leases: %w", err)
	}
	until := start.Add(c.opts.TTL - c.margin)
	lost, lapsed := 0, 0
	var adopted []string
	c.mu.Lock()
	now := time.Now()
	for u, l := range c.owned {
		if _, ok := held[l.key]; ok {
			if !l.draining && !now.Before(l.validUntil) {
				// Renewed past its local deadline: Owns was false
				// meanwhile (the watcher dropped hints), so it was
				// lost, and is owned again after its OnLose.
				lapsed++
				c.loseLocked(u)
				adopted = append(adopted, u)
			}
			l.validUntil = until
			continue
		}
		delete(c.owned, u)
		delete(c.byKey, l.key)
		if !l.draining {
			lost++
			c.loseLocked(u)
		}
	}
	for k, u := range held {
		// A user whose OnLose still runs is adopted by a renewal after it.
		if _, ok := c.byKey[k]; !ok && !c.stopping && c.losing[u] == 0 && keyOf(u) == k {
			c.owned[u] = &lease{key: k, validUntil: until}
			c.byKey[k] = u
			adopted = append(adopted, u)
		}
	}
	c.ownLocked(adopted)
	c.stats.Lost += uint64(lost + lapsed)
	c.mu.Unlock()
	if lost > 0 {
		c.log.Warn("leases taken by another instance", "accounts", lost)
	}
	if lapsed > 0 {
		c.log.Warn("leases renewed after their local deadline; taking the accounts up again", "accounts", lapsed)
	}
	return nil
}

// claimUsers takes the leases of users that are free or expired.
func (c *Cluster) claimUsers(ctx context.Context, users []string) {
	for len(users) > 0 {
		chunk := users[:min(len(users), claimChunk)]
		users = users[len(chunk):]
		keys := make([][]byte, len(chunk))
		names := make([][]byte, len(chunk))
		byKey := make(map[userKey]string, len(chunk))
		for i, u := range chunk {
			k := keyOf(u)
			keys[i], names[i] = k[:], []byte(u)
			byKey[k] = u
		}
		start := time.Now()
		qctx, cancel := context.WithTimeout(ctx, c.opts.Period)
		rows, err := c.opts.Pool.Query(qctx, claimSQL, c.id, c.ttlMillis(), keys, names)
		var got []string
		if err == nil {
			for rows.Next() {
				var k []byte
				if err = rows.Scan(&k); err != nil {
					break
				}
				got = append(got, byKey[userKey(k)])
			}
			rows.Close()
			if err == nil {
				err = rows.Err()
			}
		}
		cancel()
		if err != nil {
			// What was claimed is adopted by the next renewal.
			if ctx.Err() == nil {
				c.log.Warn("cannot claim leases", "accounts", len(chunk), "error", err)
			}
			return
		}
		until := start.Add(c.opts.TTL - c.margin)
		c.mu.Lock()
		for _, u := range got {
			k := keyOf(u)
			c.owned[u] = &lease{key: k, validUntil: until}
			c.byKey[k] = u
		}
		c.stats.Claimed += uint64(len(got))
		c.ownLocked(got)
		c.mu.Unlock()
		if len(got) > 0 {
			c.log.Debug("claimed accounts", "accounts", len(got))
		}
	}
}

// handOver starts handing users over: Owns turns false and OnLose is
// queued; each lease stays held and renewed until its OnLose returned,
// then releaseDone deletes it and tells the others, so that the new owner
// claims it at once.
func (c *Cluster) handOver(users []string) {
	c.mu.Lock()
	for _, u := range users {
		if l := c.owned[u]; l != nil && !l.draining {
			c.drainLocked(u, l)
		}
	}
	c.mu.Unlock()
}

// releaseDone deletes the leases whose hand-over OnLose returned and tells
// the others. If the delete fails, the leases stay held and renewed, and
// it is tried again; if the renewals fail too, they lapse (expire).
func (c *Cluster) releaseDone(ctx context.Context) {
	var users []string
	var keys [][]byte
	c.mu.Lock()
	for u, l := range c.owned {
		if l.released {
			users = append(users, u)
			keys = append(keys, l.key[:])
		}
	}
	c.mu.Unlock()
	if len(users) == 0 {
		return
	}
	qctx, cancel := context.WithTimeout(ctx, c.opts.Period)
	defer cancel()
	if _, err := c.opts.Pool.Exec(qctx, releaseSQL, c.id, keys); err != nil {
		if ctx.Err() == nil {
			c.log.Warn("cannot release leases handed over; trying again", "accounts", len(users), "error", err)
		}
		return
	}
	c.mu.Lock()
	for _, u := range users {
		if l := c.owned[u]; l != nil && l.released {
			delete(c.owned, u)
			delete(c.byKey, l.key)
		}
	}
	c.stats.HandedOver += uint64(len(users))
	c.mu.Unlock()
	c.log.Debug("handed accounts over", "accounts", len(users))
	c.notify(ctx, message{Kind: kindFree})
}

// leave removes this instance's heartbeat, so that the others rebalance
// without it at once, and hands every account over: the leases are still
// renewed while their OnLose runs, and each is deleted once its OnLose
// returned. Those whose OnLose has not returned after stopTimeout are left
// to expire.
func (c *Cluster) leave(parent context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(parent), stopTimeout)
	defer cancel()
	// First the heartbeat: from now on the others leave this instance
	// out, and claim what it frees.
	if _, err := c.opts.Pool.Exec(ctx, leaveSQL, c.id); err != nil {
		c.log.Warn("cannot remove the heartbeat; the others wait for it to expire", "error", err)
	}
	c.mu.Lock()
	c.stopping = true
	for u, l := range c.owned {
		if !l.draining {
			c.drainLocked(u, l)
		}
	}
	c.mu.Unlock()
	tick := time.NewTicker(c.opts.Period)
	defer tick.Stop()
	for {
		c.releaseDone(ctx)
		c.expire()
		c.mu.Lock()
		left := len(c.owned)
		c.mu.Unlock()
		if left == 0 {
			c.log.Info("left the cluster")
			return
		}
		select {
		case <-ctx.Done():
			c.log.Warn("left the cluster before every account was handed over; their leases expire on their own", "accounts", left)
			return
		case <-c.freed:
		case <-tick.C:
			if err := c.renew(ctx, time.Now()); err != nil {
				c.log.Warn("cannot renew the leases", "error", err)
			}
		}
	}
}
