package main

import (
	"context"
	"time"

	"github.com/xapsproxy/xapsproxy/cluster"
	"github.com/xapsproxy/xapsproxy/event"
	"github.com/xapsproxy/xapsproxy/store"
)

// The cluster's timing when instances share PostgreSQL: the heartbeat and
// the leases are renewed every clusterPeriod and stay valid for clusterTTL,
// so the accounts of an instance killed are owned again within
// clusterTTL + clusterPeriod (README: Several instances). An instance
// whose renewals fall more than clusterTTL − min(3 × clusterPeriod,
// clusterTTL/2) = 4 s apart (a database that stalls) gives its accounts up
// and takes them again: the margin that keeps two instances from both
// acting for one.
const (
	clusterPeriod = 1500 * time.Millisecond
	clusterTTL    = 8 * time.Second
	// publishTimeout bounds a notification to the owner of an account.
	publishTimeout = 5 * time.Second
	// claimTimeout bounds reading a newly owned account's outbox.
	claimTimeout = 10 * time.Second
	// handOverTimeout bounds stopping an account's watcher and waiting
	// for its pushes in flight (each bounded by push.Options.SendTimeout,
	// 30 s) when it goes to another instance; past it the account goes
	// anyway, and a push still in flight may reach the device twice.
	handOverTimeout = 40 * time.Second
)

// newCluster makes, for a PostgreSQL store, the membership that gives every
// account one owning instance; nil for SQLite (one instance owns all). The
// watch manager and the pusher are made after it and ask it who owns what.
func (a *app) newCluster() *cluster.Cluster {
	pg, ok := a.store.(*store.Postgres)
	if !ok {
		return nil
	}
	return cluster.New(cluster.Options{
		Pool:  pg.Pool(),
		Users: a.store.Users,
		// An account comes here: send what its outbox owes, then watch
		// it. In that order: the outbox is read before this instance's
		// watcher can commit anything to it, so an entry reaches the
		// pusher once (as the watcher's event), not also through Claim.
		OnOwn: func(user string) {
			ctx, cancel := context.WithTimeout(context.Background(), claimTimeout)
			defer cancel()
			if err := a.pusher.Claim(ctx, user); err != nil {
				a.log.Error("cannot read the outbox of an account taken over; its owed pushes wait for the next owner", "user", user, "err", err)
			}
			a.watch.Sync(user)
		},
		// It goes: nothing here may watch it or push for it once this
		// returns, since the next owner starts right after.
		OnLose: func(ctx context.Context, user string) {
			// Bounded: a lease stays held (draining) until this returns,
			// and a store that keeps failing would hold it for good.
			ctx, cancel := context.WithTimeout(ctx, handOverTimeout)
			defer cancel()
			if err := a.watch.Release(ctx, user); err != nil {
				a.log.Warn("watcher of an account handed over did not stop in time", "user", user, "err", err)
			}
			if err := a.pusher.Release(ctx, user); err != nil {
				a.log.Warn("pushes of an account handed over did not end in time", "user", user, "err", err)
			}
		},
		OnSync: func(user string) { a.watch.Sync(user) },
		// After the listener reconnected: the hints other instances
		// published meanwhile were lost, so look at the account too.
		OnResync: func(user string) {
			a.watch.Sync(user)
			a.watch.CatchUp(user)
		},
		OnHint: func(h event.Hint) { a.watch.Hint(h) },
		Period: clusterPeriod,
		TTL:    clusterTTL,
		Logger: a.log.With("part", "cluster"),
	})
}

// hint is where Dovecot's events enter: applied here when this instance
// owns the account, else handed to its owner (hintRelay).
func (a *app) hint(h event.Hint) {
	if a.cluster == nil {
		a.watch.Hint(h)
		return
	}
	h.User = a.cfg.Backend.CanonicalUser(h.User)
	a.relay.hand(h)
}

// synced tells the owner of user, whichever instance, that its
// registrations changed; without a cluster the manager here is the owner.
func (a *app) synced(ctx context.Context, user string) {
	a.watch.Sync(user)
	if a.cluster == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), publishTimeout)
	defer cancel()
	if err := a.cluster.PublishRegistration(ctx, user); err != nil {
		a.log.Warn("cannot tell the account's owner of a registration change; it sees it at its next full look", "user", user, "err", err)
	}
}

// ownsFunc is the Owns option of the watch manager and the pusher: nil
// without a cluster (everything is this instance's).
func (a *app) ownsFunc() func(string) bool {
	if a.cluster == nil {
		return nil
	}
	return a.cluster.Owns
}

// tellOwners, on a PostgreSQL store, tells the instances owning users that
// their registrations changed (a deletion by `xapsproxy registrations`), so
// that an account left without devices stops being watched at once rather
// than at the owner's next full look. A failure leaves that look to do it:
// the deletion itself is done.
func tellOwners(ctx context.Context, st store.Store, users ...string) {
	pg, ok := st.(*store.Postgres)
	if !ok {
		return
	}
	c := cluster.New(cluster.Options{Pool: pg.Pool(), Users: st.Users})
	ctx, cancel := context.WithTimeout(ctx, publishTimeout)
	defer cancel()
	for _, u := range users {
		if err := c.PublishRegistration(ctx, u); err != nil {
			return // the owners converge at their next full look (5 minutes)
		}
	}
}
