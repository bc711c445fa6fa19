package watch

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/xapsproxy/xapsproxy/config"
)

// watcher is the backend connection of one account (SourceIdle). Its
// goroutine (run) owns the connection and reports what it sees to the
// account's owner; the manager tells it about a new mailbox set with
// mailboxesChanged and ends it with stop.
type watcher struct {
	m    *Manager
	o    *owner
	user string
	log  *slog.Logger

	changed chan struct{} // 1-buffered: the owner's mailboxes changed

	mu        sync.Mutex
	interrupt context.CancelFunc // ends a session's wait for the backend; nil if none

	cancel context.CancelFunc
	done   chan struct{}

	// Owned by run: what the watcher is doing; how many connections it has
	// opened.
	state        State
	dials        int
	troubleSince time.Time // first failure since the watcher last watched
}

func (m *Manager) startWatcher(ctx context.Context, o *owner) *watcher {
	wctx, cancel := context.WithCancel(ctx)
	w := &watcher{
		m:       m,
		o:       o,
		user:    o.user,
		log:     m.log.With("user", o.user),
		changed: make(chan struct{}, 1),
		cancel:  cancel,
		done:    make(chan struct{}),
		state:   StateConnecting,
	}
	m.stats.states[StateConnecting].Add(1)
	o.status.setState(StateConnecting)
	go func() {
		defer close(w.done)
		defer func() { m.stats.states[w.state].Add(-1) }()
		w.run(wctx)
	}()
	return w
}

// stop ends the watcher and waits for it.
func (w *watcher) stop() {
	w.cancel()
	<-w.done
}

func (w *watcher) mailboxesChanged() {
	select {
	case w.changed <- struct{}{}:
	default:
	}
	w.mu.Lock()
	if w.interrupt != nil {
		w.interrupt()
	}
	w.mu.Unlock()
}

// setInterrupt sets what mailboxesChanged calls besides signalling
// changed (nil: nothing). It returns false, setting nothing, when a change
// is already signalled.
func (w *watcher) setInterrupt(f context.CancelFunc) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if f != nil && len(w.changed) > 0 {
		return false
	}
	w.interrupt = f
	return true
}

// run keeps a backend session going. When the backend cannot be reached,
// connect waits at the manager's gate. After any other failure (a lost
// connection, a mailbox error), the first since the watcher was last
// healthy (logged in for a minute) goes straight back to connect, where the
// gate and the login limiter pace it; the following ones wait a jittered
// exponential backoff. A refused login waits the longest backoff.
func (w *watcher) run(ctx context.Context) {
	opts := &w.m.opts
	backoff := opts.MinBackoff
	failures := 0 // sessions failed since the watcher was last healthy
	for {
		loggedIn, err := w.session(ctx)
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, ErrNoCredential) || isRefused(err) && w.m.opts.Watch.Auth == config.AuthCaptured {
			// Nothing to log in with until the user logs in again.
			w.setState(StateNoCredential)
			w.o.failed(err)
			w.log.Warn("no password to log in with: waiting for the user's next login", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-w.changed:
			}
			w.setState(StateConnecting)
			backoff, failures = opts.MinBackoff, 0
			continue
		}
		w.troubled()
		w.o.failed(err)
		if !loggedIn.IsZero() && time.Since(loggedIn) > healthyAfter {
			backoff, failures = opts.MinBackoff, 0
		}
		failures++
		var delay time.Duration
		switch {
		case isRefused(err):
			delay = jitter(opts.MaxBackoff)
			w.log.Warn("backend refused the login, retrying later", "err", err, "delay", delay.Round(time.Millisecond))
		case failures == 1:
			w.log.Warn("backend session ended, reconnecting", "err", err)
		default:
			delay = jitter(backoff)
			backoff = min(2*backoff, opts.MaxBackoff)
			w.log.Warn("backend session ended, reconnecting", "err", err, "delay", delay.Round(time.Millisecond))
		}
		if delay > 0 {
			refused := isRefused(err)
			if refused { // first: a watcher seen in backoff is seen refused
				w.m.stats.refused.Add(1)
			}
			w.setState(StateBackoff)
			slept := sleep(ctx, delay)
			if refused {
				w.m.stats.refused.Add(-1)
			}
			if !slept {
				return
			}
			w.setState(StateConnecting)
		}
	}
}

// troubled notes the start of a spell of failures, for the line logged
// when the watcher watches again.
func (w *watcher) troubled() {
	if w.troubleSince.IsZero() {
		w.troubleSince = time.Now()
	}
}

// session runs one backend session of the account's source: NOTIFY when
// the source is SourceNotify, or SourceAuto and the backend was not found
// without NOTIFY yet; otherwise IDLE.
func (w *watcher) session(ctx context.Context) (time.Time, error) {
	m := w.m
	if m.opts.Source == SourceNotify || m.opts.Source == SourceAuto && !m.noNotify.Load() {
		m.stats.notifySessions.Add(1)
		loggedIn, err := w.notifySession(ctx)
		m.stats.notifySessions.Add(-1)
		if !errors.Is(err, errNoNotify) {
			return loggedIn, err
		}
		if !m.noNotify.Swap(true) {
			m.log.Warn("the backend does not offer NOTIFY after login; watching with IDLE instead")
		}
	}
	m.stats.idleSessions.Add(1)
	defer m.stats.idleSessions.Add(-1)
	return w.idleSession(ctx)
}

// watching marks the watcher as watching, logging its recovery after
// failures.
func (w *watcher) watching() {
	if w.state == StateWatching {
		return
	}
	w.setState(StateWatching)
	if !w.troubleSince.IsZero() {
		w.log.Info("watching again", "after", time.Since(w.troubleSince).Round(time.Millisecond))
		w.troubleSince = time.Time{}
	}
}

// connect returns a backend connection logged in as the watcher's user.
//
// It first passes the manager's gate, waiting while the backend is known to
// be unreachable, then takes one of the manager's login slots, held from
// the TCP connect to the answer to LOGIN: however many watchers need a
// connection at once, at most Watch.MaxConcurrentLogins of them reach the
// backend together. A failure to reach the backend closes the gate, before
// the slot is given back so that the watchers queued for it find the gate
// closed rather than dial, and connect waits at the gate again. Any other
// failure is returned.
func (w *watcher) connect(ctx context.Context, open func(context.Context) error) error {
	m := w.m
	for {
		epoch, err := m.gate.wait(ctx, func() { w.setState(StateUnreachable) })
		if err != nil {
			return err
		}
		w.setState(StateConnecting)
		if err := m.logins.acquire(ctx); err != nil {
			return err
		}
		if !m.gate.isOpen(epoch) { // it closed while we queued
			m.logins.release()
			continue
		}
		if w.dials > 0 {
			m.stats.reconnects.Add(1)
		}
		w.dials++
		err = open(ctx)
		down := err != nil && ctx.Err() == nil && isUnreachable(err)
		if down {
			m.gate.fail(epoch, err)
			w.o.failed(err)
		}
		m.logins.release()
		if !down {
			return err
		}
		w.troubled()
	}
}
