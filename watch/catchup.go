package watch

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"golang.org/x/time/rate"

	"github.com/xapsproxy/xapsproxy/event"
	"github.com/xapsproxy/xapsproxy/store"
)

// catchUp looks at accounts on connections of their own: at startup with
// SourceEvents (mail may have come while the proxy was away), and for an
// account whose hints overflowed the queue. Its goroutine (run) takes users
// from a set, so an account queued twice is looked at once, at most
// CatchUpRate accounts a second and through the shared login limiter.
type catchUp struct {
	m *Manager

	mu      sync.Mutex
	pending map[string]struct{}
	order   []string
	wake    chan struct{}
}

func newCatchUp(m *Manager) *catchUp {
	return &catchUp{m: m, pending: make(map[string]struct{}), wake: make(chan struct{}, 1)}
}

func (c *catchUp) add(user string) {
	c.mu.Lock()
	if _, ok := c.pending[user]; !ok {
		c.pending[user] = struct{}{}
		c.order = append(c.order, user)
	}
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// Pending reports how many accounts wait for a catch-up look.
func (c *catchUp) Pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.pending)
}

func (c *catchUp) next() (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.order) == 0 {
		return "", false
	}
	u := c.order[0]
	c.order = c.order[1:]
	delete(c.pending, u)
	return u, true
}

// run looks at queued accounts until ctx is done, several at once (as many
// as the login limiter lets through).
func (c *catchUp) run(ctx context.Context) {
	m := c.m
	limit := rate.NewLimiter(rate.Limit(m.opts.CatchUpRate), 1)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		user, ok := c.next()
		if !ok {
			select {
			case <-ctx.Done():
				return
			case <-c.wake:
				continue
			}
		}
		if err := limit.Wait(ctx); err != nil {
			return
		}
		m.mu.Lock()
		o := m.owners[user]
		m.mu.Unlock()
		if o == nil {
			continue
		}
		if err := m.logins.acquire(ctx); err != nil {
			return
		}
		wg.Go(func() {
			defer m.logins.release()
			if err := m.lookAt(ctx, o, o.snapshot()); err != nil && ctx.Err() == nil {
				m.stats.catchUpFailures.Add(1)
				m.stats.catchUpFailingInRow.Add(1)
				o.failed(fmt.Errorf("catch-up: %w", err))
				m.log.Warn("catch-up failed", "user", user, "err", err)
				return
			}
			m.stats.catchUps.Add(1)
			m.stats.catchUpFailingInRow.Store(0)
		})
	}
}

// lookAt logs in as the owner's user on a connection of its own, reads the
// state of each mailbox with STATUS and applies it as a look. The caller
// holds a login slot.
func (m *Manager) lookAt(ctx context.Context, o *owner, mailboxes []string) error {
	c, err := m.dial(ctx, m.clientOptions(o.user))
	if err != nil {
		return err
	}
	defer c.Close()
	if err := m.login(ctx, c, o.user); err != nil {
		return err
	}
	for _, mb := range mailboxes {
		name, ok := backendName(mb)
		if !ok {
			continue // not modified UTF-7: no such mailbox on the backend
		}
		uidValidity, uidNext, err := c.Status(ctx, name)
		if err := skippable(err); err != nil {
			return fmt.Errorf("status %s: %w", mb, err)
		}
		if err != nil {
			continue // refused, e.g. a mailbox that does not exist
		}
		o.apply(ctx, event.Hint{User: o.user, Mailbox: decodedName(mb), UIDValidity: uidValidity, UIDNext: uidNext})
	}
	c.Logout(ctx)
	return nil
}

// Baseline records, for the mailboxes of a new registration that have no
// stored state yet, the state they have now, so that mail arriving from
// this moment on is news to the owner even before its source is running.
// It is called after the registration is stored and before the device is
// answered; it waits for a login slot and gives up when ctx ends.
//
// The baselines of one account run one at a time: each holds a login slot
// that every account shares for as long as it looks, and a user could
// otherwise send registration after registration from many sessions (of
// mailboxes that do not exist, which never get a baseline) and hold them
// all, so that no other account's connection could log in.
func (m *Manager) Baseline(ctx context.Context, user string, mailboxes []string) error {
	unlock, err := m.baselines.lock(ctx, user)
	if err != nil {
		return err
	}
	defer unlock()
	var missing []string
	for _, mb := range mailboxes {
		sctx, cancel := context.WithTimeout(ctx, storeTimeout)
		_, err := m.opts.Store.MailboxState(sctx, user, mb)
		cancel()
		switch {
		case errors.Is(err, store.ErrNotFound):
			missing = append(missing, mb)
		case err != nil:
			return err
		}
	}
	if len(missing) == 0 {
		return nil
	}
	if err := m.logins.acquire(ctx); err != nil {
		return err
	}
	defer m.logins.release()
	// Apply through a detached owner: the looks only store baselines (no
	// state is stored), and the account's own owner reads them from the
	// store when it first needs them.
	o := newOwner(m, user, missing)
	o.baselineOnly = true
	return m.lookAt(ctx, o, missing)
}

// userLocks is one mutex per user, made while someone holds or waits for
// it, so that the map is bounded by the users at work.
type userLocks struct {
	mu sync.Mutex
	m  map[string]*userLock
}

type userLock struct {
	held chan struct{} // 1-buffered: full while held
	refs int           // holders and waiters, under userLocks.mu
}

// lock takes user's mutex, waiting until ctx is done; unlock gives it back.
func (l *userLocks) lock(ctx context.Context, user string) (unlock func(), err error) {
	l.mu.Lock()
	if l.m == nil {
		l.m = make(map[string]*userLock)
	}
	u := l.m[user]
	if u == nil {
		u = &userLock{held: make(chan struct{}, 1)}
		l.m[user] = u
	}
	u.refs++
	l.mu.Unlock()
	forget := func() {
		l.mu.Lock()
		if u.refs--; u.refs == 0 {
			delete(l.m, user)
		}
		l.mu.Unlock()
	}
	select {
	case u.held <- struct{}{}:
		return func() { <-u.held; forget() }, nil
	case <-ctx.Done():
		forget()
		return nil, ctx.Err()
	}
}

// CatchUp queues a look at the registered mailboxes of user by the
// catch-up, for hints that may have been missed (another instance could
// not hand them over). Only with Dovecot's events: the sources with a
// connection per account look at every login on their own.
func (m *Manager) CatchUp(user string) {
	if m.opts.Source != SourceEvents {
		return
	}
	m.catchUp.add(user)
}
