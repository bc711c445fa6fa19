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
// over: OnLose, then it deletes the lease and notifies, and the new owner
// claims it at once. An instance that cannot renew gives its leases up by a
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
	// at once, never at the same time as OnLose; Run waits for it, so it
	// should take no more than a round trip to the store (such as
	// push.Pusher.Claim). nil = nothing.
	OnOwn func(user string)
	// OnLose is called when this instance stops owning user (Owns(user)
	// is already false); it must return only once nothing of this
	// instance watches or pushes for user any more, since the next owner
	// may start right after. Called from goroutines of Run, for up to 64
	// users at once (never for one user twice at once), and never at the
	// same time as OnOwn. nil = nothing.
	OnLose func(ctx context.Context, user string)
	// OnSync is called on the owner of user when some instance published
	// a change of user's registrations, and for every owned user after
	// the listener reconnected (notifications may have been missed). It
	// must not block. nil = nothing.
	OnSync func(user string)
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

	mu      sync.Mutex
	owned   map[string]*lease // user -> lease held
	byKey   map[userKey]string
	live    []string            // instances seen live at the last heartbeat
	claim   map[string]struct{} // users this instance should own and claim at once (from notifications)
	resync  bool                // call OnSync for every owned user
	stats   Stats
	abandon bool // tests: stop like a killed process, without hand-over
}

type lease struct {
	key userKey
	// validUntil is the local, monotonic deadline of the lease: the start
	// of the statement that last claimed or renewed it, plus TTL minus the
	// margin. The database's expiry is later than that.
	validUntil time.Time
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
	// Room for a missed renewal, a slow statement (each is bounded by
	// Period) and OnLose before the database lets another instance in.
	margin := min(3*opts.Period, opts.TTL/2)
	return &Cluster{
		opts:   opts,
		log:    opts.Logger.With("instance", opts.ID),
		id:     opts.ID,
		margin: margin,
		kick:   make(chan struct{}, 1),

		claimKick: make(chan struct{}, 1),
		owned:     map[string]*lease{},
		byKey:     map[userKey]string{},
		claim:     map[string]struct{}{},
	}
}

// ID is this instance's ID.
func (c *Cluster) ID() string { return c.id }

// Owns reports whether this instance owns user now: it holds the lease and
// its local deadline has not passed.
func (c *Cluster) Owns(user string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	l := c.owned[user]
	return l != nil && time.Now().Before(l.validUntil)
}

// Owned returns the users this instance owns, sorted.
func (c *Cluster) Owned() []string {
	now := time.Now()
	c.mu.Lock()
	out := make([]string, 0, len(c.owned))
	for u, l := range c.owned {
		if now.Before(l.validUntil) {
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
	s.Owned, s.Instances = len(c.owned), len(c.live)
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
// once. Beside its own goroutine it runs the listener, which it waits for.
// It returns an error only if the options are unusable or the tables
// cannot be created.
func (c *Cluster) Run(ctx context.Context) error {
	if c.opts.Pool == nil || c.opts.Users == nil {
		return errors.New("cluster: Pool and Users are required")
	}
	if c.opts.TTL < 3*c.opts.Period {
		return errors.New("cluster: TTL must be at least 3 × Period")
	}
	if err := Migrate(ctx, c.opts.Pool); err != nil {
		if ctx.Err() != nil {
			return nil // stopped before it joined
		}
		return err
	}
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
		c.expire(ctx)
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

// callParallel bounds the OnOwn or OnLose calls at once: a hand-over of
// many accounts must not hold the loop (and the renewal of the other
// leases) for one call after another.
const callParallel = 64

// ownAll calls OnOwn for every user, several at once, and waits for all.
func (c *Cluster) ownAll(users []string) {
	if c.opts.OnOwn == nil {
		return
	}
	sem := make(chan struct{}, callParallel)
	var wg sync.WaitGroup
	for _, u := range users {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			c.opts.OnOwn(u)
		})
	}
	wg.Wait()
}

// loseAll calls lose for every user, several at once, and waits for all.
func (c *Cluster) loseAll(ctx context.Context, users []string) {
	sem := make(chan struct{}, callParallel)
	var wg sync.WaitGroup
	for _, u := range users {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			c.lose(ctx, u)
		})
	}
	wg.Wait()
}

// lose forgets user's lease and calls OnLose.
func (c *Cluster) lose(ctx context.Context, user string) {
	c.mu.Lock()
	l := c.owned[user]
	if l != nil {
		delete(c.owned, user)
		delete(c.byKey, l.key)
	}
	c.mu.Unlock()
	if l != nil && c.opts.OnLose != nil {
		c.opts.OnLose(ctx, user)
	}
}

// expire gives up the leases whose local deadline passed: their renewal
// failed, and another instance may take them soon.
func (c *Cluster) expire(ctx context.Context) {
	now := time.Now()
	var gone []string
	c.mu.Lock()
	for u, l := range c.owned {
		if !now.Before(l.validUntil) {
			gone = append(gone, u)
		}
	}
	c.stats.Lost += uint64(len(gone))
	c.mu.Unlock()
	if len(gone) > 0 {
		c.log.Warn("leases could not be renewed in time; giving the accounts up", "accounts", len(gone))
	}
	c.loseAll(ctx, gone)
}
