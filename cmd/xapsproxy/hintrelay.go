package main

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/xapsproxy/xapsproxy/cluster"
	"github.com/xapsproxy/xapsproxy/event"
)

// A Dovecot event for an account another instance owns is handed to the
// owner over PostgreSQL; when that fails (a database blip), the relay tries
// again every relayEvery for up to relayFor, so that the mail is pushed now
// and not at the account's next look. An outage longer than that makes the
// owners give their accounts up anyway, and the instance that takes one
// over looks at it.
const (
	relayEvery   = time.Second
	relayFor     = 15 * time.Second
	relayTry     = time.Second // bound of one try
	relayMaxHeld = 4096        // hints held at most; the oldest go first
)

// hintRelay holds the hints that could not be handed over yet. Its run
// goroutine (started by app.run beside the cluster) owns the retries.
type hintRelay struct {
	owns    func(user string) bool
	apply   func(event.Hint) // this instance's manager, once it owns the account
	publish func(context.Context, event.Hint) error
	log     *slog.Logger
	now     func() time.Time

	mu   sync.Mutex
	held []heldHint // oldest first
}

type heldHint struct {
	h     event.Hint
	since time.Time
}

func newHintRelay(owns func(string) bool, apply func(event.Hint), publish func(context.Context, event.Hint) error, log *slog.Logger) *hintRelay {
	return &hintRelay{owns: owns, apply: apply, publish: publish, log: log, now: time.Now}
}

// hand applies h here when this instance owns its account, else hands it
// to the owner, holding it for another try if that fails.
func (r *hintRelay) hand(h event.Hint) {
	if r.owns(h.User) {
		r.apply(h)
		return
	}
	// Dovecot's delivery may wait for this answer: a database that does
	// not answer costs it relayTry once, and while hints are held (the
	// database away) the next ones join them at once, in order.
	if r.pending() > 0 {
		r.hold(h, errors.New("earlier events still wait for their owners"))
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), relayTry)
	err := r.publish(ctx, h)
	cancel()
	switch {
	case err == nil:
		return
	case errors.Is(err, cluster.ErrTooLarge):
		// Never fits: the account's next look finds the mail.
		r.log.Info("a mail event too large to hand to the account's owner; its next look finds the mail", "user", h.User, "err", err)
		return
	}
	r.hold(h, err)
}

// hold keeps h for the next retry.
func (r *hintRelay) hold(h event.Hint, err error) {
	r.mu.Lock()
	if len(r.held) == 0 {
		r.log.Warn("cannot hand mail events to the accounts' owners; trying again", "user", h.User, "err", err)
	}
	if len(r.held) >= relayMaxHeld {
		r.log.Warn("too many mail events waiting for their owners; the oldest is left to the account's next look", "user", r.held[0].h.User)
		r.held = r.held[1:]
	}
	r.held = append(r.held, heldHint{h, r.now()})
	r.mu.Unlock()
}

// run tries the held hints again every relayEvery until ctx is done.
func (r *hintRelay) run(ctx context.Context) {
	tick := time.NewTicker(relayEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			r.retry(ctx)
		}
	}
}

// retry hands over what is held, in order, and stops at the first failure
// (the database still away): the rest keeps its place. Hints held longer
// than relayFor are given up.
func (r *hintRelay) retry(ctx context.Context) {
	r.mu.Lock()
	held := r.held
	r.held = nil
	r.mu.Unlock()
	var keep []heldHint
	for i, p := range held {
		if r.owns(p.h.User) {
			r.apply(p.h)
			continue
		}
		tctx, cancel := context.WithTimeout(ctx, relayTry)
		err := r.publish(tctx, p.h)
		cancel()
		if err == nil {
			continue
		}
		for _, q := range held[i:] {
			if r.now().Sub(q.since) < relayFor {
				keep = append(keep, q)
			} else {
				r.log.Warn("gave up handing a mail event to the account's owner; its next look finds the mail", "user", q.h.User, "err", err)
			}
		}
		break
	}
	r.mu.Lock()
	r.held = append(keep, r.held...) // those held meanwhile come after
	if n := len(r.held) - relayMaxHeld; n > 0 {
		r.held = r.held[n:]
	}
	r.mu.Unlock()
}

// pending is how many hints wait for another try.
func (r *hintRelay) pending() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.held)
}
