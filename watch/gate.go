package watch

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"time"
)

// The prober's backoff: short, because while the gate is closed every
// watcher waits for it, and one connection a second costs the backend
// nothing. The longest wait bounds how late a backend that is back is
// noticed.
const (
	probeMinBackoff = 200 * time.Millisecond
	probeMaxBackoff = time.Second
)

// unreachableError marks a failure to reach the backend at all: the TCP
// connect, TLS or the greeting failed. Such a failure is the backend's, not
// the watcher's, so it closes the gate rather than start the watcher's own
// backoff.
type unreachableError struct{ err error }

func (e *unreachableError) Error() string { return e.err.Error() }
func (e *unreachableError) Unwrap() error { return e.err }

func unreachable(err error) error { return &unreachableError{err} }

func isUnreachable(err error) bool {
	var u *unreachableError
	return errors.As(err, &u)
}

// gate says whether the backend is reachable, so that when it is not,
// hundreds of watchers wait instead of each redialling on its own backoff.
// It starts open. A watcher whose connection fails before the greeting
// closes it (fail); watchers then wait (wait) while a single prober (run,
// Manager.Run's goroutine) redials with a short jittered backoff, and opens
// the gate as soon as it reads a greeting. The watchers then proceed
// through the login limiter. The gate logs one line when the backend
// becomes unreachable and one when it is back.
type gate struct {
	m *Manager

	mu     sync.Mutex
	open   bool
	epoch  uint64        // incremented each time the gate opens
	opened chan struct{} // closed when the gate opens; a new one when it closes
	since  time.Time     // when it closed
	closed chan struct{} // 1-buffered: wakes the prober
}

func newGate(m *Manager) *gate {
	opened := make(chan struct{})
	close(opened)
	return &gate{m: m, open: true, opened: opened, closed: make(chan struct{}, 1)}
}

// wait returns at once while the gate is open, else calls blocked and waits
// until it opens or ctx is done. The epoch it returns goes to fail.
func (g *gate) wait(ctx context.Context, blocked func()) (epoch uint64, err error) {
	for {
		g.mu.Lock()
		open, epoch, opened := g.open, g.epoch, g.opened
		g.mu.Unlock()
		if open {
			return epoch, nil
		}
		if blocked != nil {
			blocked()
			blocked = nil
		}
		select {
		case <-opened:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

// isOpen reports whether the gate is still open in epoch.
func (g *gate) isOpen(epoch uint64) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.open && g.epoch == epoch
}

// fail closes the gate after a watcher that passed it in epoch could not
// reach the backend. A failure from an earlier epoch is ignored: the
// backend has been reached since, and the watcher simply tries again.
func (g *gate) fail(epoch uint64, err error) {
	g.mu.Lock()
	if !g.open || g.epoch != epoch {
		g.mu.Unlock()
		return
	}
	g.open, g.opened, g.since = false, make(chan struct{}), time.Now()
	g.mu.Unlock()
	g.m.log.Warn("backend unreachable; watchers wait while one connection probes it", "err", err)
	select {
	case g.closed <- struct{}{}:
	default:
	}
}

// reopen opens the gate.
func (g *gate) reopen(probes int) {
	g.mu.Lock()
	g.open = true
	g.epoch++
	close(g.opened)
	down := time.Since(g.since)
	g.mu.Unlock()
	g.m.log.Info("backend reachable again", "unreachable_for", down.Round(time.Millisecond), "probes", probes)
}

// up reports whether the gate is open.
func (g *gate) up() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.open
}

// run is the prober: each time the gate closes, it redials until the
// backend greets and then opens the gate. It returns when ctx is done.
func (g *gate) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-g.closed:
		}
		probes, ok := g.probe(ctx)
		if !ok {
			return
		}
		g.reopen(probes)
	}
}

// probe dials the backend, after a jittered backoff that starts at
// probeMinBackoff and doubles up to probeMaxBackoff, until it reads a
// greeting; it returns the number of attempts, and false if ctx ended
// first.
func (g *gate) probe(ctx context.Context) (int, bool) {
	backoff := probeMinBackoff
	for n := 1; ; n++ {
		if !sleep(ctx, jitter(backoff)) {
			return n - 1, false
		}
		g.m.stats.probes.Add(1)
		c, err := g.m.dial(ctx, g.m.clientOptions(""))
		if err == nil {
			c.Close()
			return n, true
		}
		if ctx.Err() != nil {
			return n, false
		}
		g.m.log.Debug("backend probe failed", "err", err)
		backoff = min(2*backoff, probeMaxBackoff)
	}
}

// jitter returns a random wait in [d/2, d] ("equal jitter"): spread out,
// yet never much shorter than d.
func jitter(d time.Duration) time.Duration { return d/2 + rand.N(d/2+1) }

// sleep waits d, or until ctx is done; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
