// Package cluster shares the accounts among several xapsproxy instances
// that use the same PostgreSQL: every account with registrations is owned
// (watched, and pushed for) by exactly one live instance at a time.
//
// Each instance has a random ID and a heartbeat row (xapsproxy_instances)
// renewed every Period, valid for TTL by the database's clock. The live
// instances decide each account's desired owner by rendezvous hashing; the
// desired owner claims the account's lease (xapsproxy_leases) with a
// conditional upsert that only takes a lease that is expired or its own,
// and renews all its leases in one statement per Period. When the desired
// owner of an account becomes another live instance, the owner hands it
// over: Owns turns false, OnLose runs while the lease is still held and
// renewed, then the lease is deleted and the others notified, and the new
// owner claims it at once. The callbacks never hold up the renewals. An instance that cannot renew gives its leases up by a
// local monotonic deadline earlier than their expiry in the database, so two
// instances never both believe they own an account.
//
// Registrations and event-source hints reach the owner over LISTEN/NOTIFY
// (PublishRegistration, PublishHint). Use: New(opts), then Run(ctx) in a
// goroutine; Owns(user) says whether this instance owns user now.
package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/xapsproxy/xapsproxy/event"
)

// Defaults for zero Options fields.
const (
	DefaultPeriod = 2 * time.Second
	DefaultTTL    = 10 * time.Second
	// stopTimeout bounds the hand-over when Run's context is done.
	stopTimeout = 10 * time.Second
	// minBackoff and maxBackoff bound the wait between LISTEN reconnects.
	minBackoff = 100 * time.Millisecond
	maxBackoff = 10 * time.Second
)

// Options configure a Cluster. Pool and Users are required.
type Options struct {
	// Pool is the shared PostgreSQL; the listener takes one connection
	// of it for itself.
	Pool *pgxpool.Pool
	// Users lists every user with registrations (the store's Users).
	Users func(ctx context.Context) ([]string, error)
	// OnOwn is called when this instance starts owning user (Owns(user)
	// is already true). Called from goroutines of Run, for up to 64 users
	// at once (OnOwn and OnLose together); the calls for one user run one
	// after another, in order, never at once. Nothing waits for it but
	// the next call for the same user. It is skipped if, by its turn, the
	// stop began or user is no longer owned; the OnLose that follows is
	// still called. nil = nothing.
	OnOwn func(user string)
	// OnLose is called when this instance stops owning user (Owns(user)
	// is already false); it must return only once nothing of this
	// instance watches or pushes for user any more, since the next owner
	// may start right after. Called like OnOwn, even if the OnOwn
	// before it was skipped. While it runs, a lease
	// handed over is still held and renewed: the next owner waits for it
	// (a lease that lapsed because it could not be renewed does not
	// wait). Its ctx is done when a stop has taken stopTimeout (10 s).
	// nil = nothing.
	OnLose func(ctx context.Context, user string)
	// OnSync is called on the owner of user when some instance published
	// a change of user's registrations, and for every owned user after
	// the listener reconnected (notifications may have been missed). It
	// must not block. nil = nothing.
	OnSync func(user string)
	// OnResync, when set, is called instead of OnSync for every owned
	// user after the listener reconnected: registrations and hints
	// published meanwhile were missed, so the owner should look at the
	// account, not only converge. It must not block. nil = OnSync.
	OnResync func(user string)
	// OnHint is called on the owner of h.User with a hint some instance
	// published. It must not block. nil = nothing.
	OnHint func(event.Hint)
	// Period is how often the heartbeat and the leases are renewed and
	// the accounts rebalanced; 0 = DefaultPeriod (2s).
	Period time.Duration
	// TTL is how long a heartbeat and a lease stay valid without renewal
	// (an instance killed loses its accounts within TTL + Period); it must
	// be at least 3 × Period. 0 = DefaultTTL (10s).
	TTL time.Duration
	// Logger; nil discards.
	Logger *slog.Logger
	// ID names this instance; "" = a random one. Two running instances
	// must never share one.
	ID string
}

// Cluster is one instance's membership. Create it with New and start Run.
type Cluster struct {
	opts   Options
	log    *slog.Logger
	id     string
	margin time.Duration // a lease is given up this long before its expiry

	kick      chan struct{} // 1-buffered: rebalance now
	claimKick chan struct{} // 1-buffered: claim the users in claim now
	freed     chan struct{} // 1-buffered: an OnLose of a hand-over returned

	sem     chan struct{}   // callParallel: the callbacks running
	callers sync.WaitGroup  // the callback goroutines; Run waits for them
	callCtx context.Context // OnLose's; done when a stop took too long

	mu       sync.Mutex
	owned    map[string]*lease // user -> lease held
	byKey    map[userKey]string
	live     []string            // instances seen live at the last heartbeat
	claim    map[string]struct{} // users this instance should own and claim at once (from notifications)
	resync   bool                // call OnSync for every owned user
	stats    Stats
	calls    map[string]chan struct{} // user -> done of its last callback queued
	losing   map[string]int           // user -> its OnLose queued or running
	stopping bool                     // leave began: adopt nothing
	abandon  bool                     // tests: stop like a killed process, without hand-over
}

type lease struct {
	key userKey
	// validUntil is the local, monotonic deadline of the lease: the start
	// of the statement that last claimed or renewed it, plus TTL minus the
	// margin. The database's expiry is later than that.
	validUntil time.Time
	// draining: handed over, OnLose queued or running; Owns is false,
	// the lease is still renewed. released: that OnLose returned, the
	// lease is to be deleted.
	draining, released bool
}

// Stats are counts for metrics.
type Stats struct {
	Owned      int // accounts owned now
	Instances  int // live instances at the last heartbeat, this one included
	Claimed    uint64
	HandedOver uint64 // leases given to their new desired owner
	Lost       uint64 // leases given up because they could not be renewed
	Reconnects uint64 // of the listener
}

// New returns a Cluster; it does no I/O.
func New(opts Options) *Cluster {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Period <= 0 {
		opts.Period = DefaultPeriod
	}
	if opts.TTL <= 0 {
		opts.TTL = DefaultTTL
	}
	if opts.ID == "" {
		b := make([]byte, 8)
		rand.Read(b)
		opts.ID = hex.EncodeToString(b)
	}
	// Owns turns false at a lease's local deadline by itself, wherever
	// the loop is. The margin is room, before the database lets another
	// instance in, for what the watcher and the Pusher began while Owns
	// was still true, and for a missed renewal or a slow statement (each
	// is bounded by Period). OnLose is not in it: a lapsed lease's OnLose
	// runs on its own. Renewals more than TTL − margin apart make the
	// lease lapse in between: renew then counts it lost and owned again.
	margin := min(3*opts.Period, opts.TTL/2)
	return &Cluster{
		opts:   opts,
		log:    opts.Logger.With("instance", opts.ID),
		id:     opts.ID,
		margin: margin,
		kick:   make(chan struct{}, 1),

		claimKick: make(chan struct{}, 1),
		freed:     make(chan struct{}, 1),
		sem:       make(chan struct{}, callParallel),
		calls:     map[string]chan struct{}{},
		losing:    map[string]int{},
		owned:     map[string]*lease{},
		byKey:     map[userKey]string{},
		claim:     map[string]struct{}{},
	}
}

// ID is this instance's ID.
func (c *Cluster) ID() string { return c.id }

// Owns reports whether this instance owns user now: it holds the lease,
// is not handing it over, and its local deadline has not passed.
func (c *Cluster) Owns(user string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.owner(user, time.Now())
}

// owner reports whether this instance owns user at now: its lease is held,
// not draining, within its local deadline, and no OnLose of user is queued
// or running (a lease lapsed and taken again during its OnLose is not owned
// before that OnLose returned). c.mu is held.
func (c *Cluster) owner(user string, now time.Time) bool {
	l := c.owned[user]
	return l != nil && !l.draining && now.Before(l.validUntil) && c.losing[user] == 0
}

// Owned returns the users this instance owns, sorted.
func (c *Cluster) Owned() []string {
	now := time.Now()
	c.mu.Lock()
	out := make([]string, 0, len(c.owned))
	for u := range c.owned {
		if c.owner(u, now) {
			out = append(out, u)
		}
	}
	c.mu.Unlock()
	slices.Sort(out)
	return out
}

// Stats returns the counts for metrics.
func (c *Cluster) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.stats
	now := time.Now()
	for u := range c.owned {
		if c.owner(u, now) {
			s.Owned++
		}
	}
	s.Instances = len(c.live)
	return s
}

func (c *Cluster) wake() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// Run joins the cluster and keeps this instance's share of the accounts
// until ctx is done; then it hands every account over (OnLose, leases
// deleted, the others notified) and leaves, so the others take over at
// once. Beside its own goroutine it runs the listener and the callbacks,
// which it waits for.
// It returns an error only if the options are unusable or the tables
// cannot be created.
func (c *Cluster) Run(ctx context.Context) error {
	if c.opts.Pool == nil || c.opts.Users == nil {
		return errors.New("cluster: Pool and Users are required")
	}
	if c.opts.TTL < 3*c.opts.Period {
		return errors.New("cluster: TTL must be at least 3 × Period")
	}
	if !c.migrate(ctx) {
		return nil // stopped before it joined
	}
	callCtx, stopCalls := context.WithCancel(context.WithoutCancel(ctx))
	c.callCtx = callCtx
	defer c.callers.Wait()
	defer stopCalls() // after leave: a stop bounds OnLose by stopTimeout
	lctx, stopListen := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { c.listen(lctx) })
	defer wg.Wait()
	defer stopListen()

	c.log.Info("joining the cluster", "period", c.opts.Period, "ttl", c.opts.TTL)
	joined := false
	tick := time.NewTicker(c.opts.Period)
	defer tick.Stop()
	expiry := time.NewTimer(c.opts.TTL)
	defer expiry.Stop()
	full := true // a whole step; else only what woke the loop
	for {
		if full && c.step(ctx) && !joined {
			joined = true
			c.notify(ctx, message{Kind: kindJoin})
		}
		full = true
		c.releaseDone(ctx)
		c.expire()
		expiry.Reset(c.nextExpiry())
		select {
		case <-ctx.Done():
			c.mu.Lock()
			abandon := c.abandon
			c.mu.Unlock()
			if !abandon {
				c.leave(ctx)
			}
			return nil
		case <-tick.C:
		case <-c.kick:
		case <-c.claimKick:
			c.claimPending(ctx)
			full = false
		case <-c.freed:
			full = false // releaseDone, above
		case <-expiry.C:
			full = false // expire, above
		}
	}
}

// nextExpiry is how long until the earliest local deadline of a lease.
func (c *Cluster) nextExpiry() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	d := c.opts.TTL
	now := time.Now()
	for _, l := range c.owned {
		d = min(d, l.validUntil.Sub(now))
	}
	return max(d, time.Millisecond)
}

// migrate creates the cluster's tables, trying again with a jittered
// backoff while the database does not answer (serve migrated them at its
// start already: a blip now must not stop it). It returns false if ctx
// ended first.
func (c *Cluster) migrate(ctx context.Context) bool {
	for failures := 0; ; failures++ {
		err := Migrate(ctx, c.opts.Pool)
		if err == nil {
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		if failures == 0 {
			c.log.Warn("cannot create the cluster's tables; trying again", "error", err)
		}
		t := time.NewTimer(backoff(failures + 1))
		select {
		case <-ctx.Done():
			t.Stop()
			return false
		case <-t.C:
		}
	}
}
