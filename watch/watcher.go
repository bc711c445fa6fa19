package watch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/xapsproxy/xapsproxy/config"
	"github.com/xapsproxy/xapsproxy/event"
	"github.com/xapsproxy/xapsproxy/internal/imapwire"
	"github.com/xapsproxy/xapsproxy/store"
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
	interrupt context.CancelFunc // ends a NOTIFY session's wait; nil if none

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
			w.setState(StateBackoff)
			if !sleep(ctx, delay) {
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

// idleSession logs in, catches up, and waits in IDLE until the connection fails
// or ctx is done. It returns when it logged in (zero if it did not).
//
// The first registered mailbox (INBOX when registered) is the one in IDLE,
// for up to idleRestart at a time when nothing happens, so that the backend
// can hibernate the connection (Dovecot's imap_hibernate_timeout). An
// EXISTS there ends the IDLE and that mailbox alone is looked at again. The
// other registered mailboxes are looked at with STATUS every PollInterval;
// an account with one mailbox never leaves IDLE for them.
func (w *watcher) idleSession(ctx context.Context) (loggedIn time.Time, err error) {
	sig := newSignals()
	var c *imapclient.Client
	err = w.connect(ctx, func(ctx context.Context) (err error) {
		c, err = w.login(ctx, sig)
		return err
	})
	if err != nil {
		return time.Time{}, err
	}
	loggedIn = time.Now()
	defer c.Close()
	defer w.setState(StateConnecting)
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	all := true // look at every mailbox, not only the one in IDLE
	lastPoll := time.Now()
	for {
		mailboxes := w.o.snapshot()
		if all {
			lastPoll = time.Now()
		}
		if err := w.check(ctx, c, sig, mailboxes, all); err != nil {
			return loggedIn, err
		}
		idle, err := c.Idle()
		if err != nil {
			return loggedIn, fmt.Errorf("idle: %w", err)
		}
		w.watching()
		wait, poll := idleRestart, false
		if len(mailboxes) > 1 {
			if next := w.m.opts.PollInterval - time.Since(lastPoll); next < wait {
				wait, poll = max(next, 0), true
			}
		}
		t := time.NewTimer(wait)
		all = false
	waiting:
		for {
			select {
			case <-sig.exists:
			case <-sig.changed:
				// Flags changed or messages went away in the mailbox in
				// IDLE: nothing to look up, IDLE goes on.
				raise(sig.changed)
				w.flagsChanged(ctx, sig, mailboxes[0])
				continue
			case <-w.changed:
				all = true
			case <-t.C:
				all = poll
			case <-ctx.Done():
			case <-c.Closed():
			}
			break waiting
		}
		t.Stop()
		if err := idle.Close(); err != nil {
			return loggedIn, fmt.Errorf("idle: %w", err)
		}
		if err := timed(c, idle.Wait); err != nil {
			return loggedIn, fmt.Errorf("idle: %w", err)
		}
		if ctx.Err() != nil {
			return loggedIn, ctx.Err()
		}
	}
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
		}
		m.logins.release()
		if !down {
			return err
		}
		w.troubled()
	}
}

// login dials the backend and logs in as the watcher's user.
func (w *watcher) login(ctx context.Context, sig *signals) (*imapclient.Client, error) {
	m := w.m
	c, err := m.dial(ctx, sig)
	if err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { c.Close() })
	err = m.login(ctx, c, w.user)
	stop()
	if err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// flagsChanged reports a change in the mailbox in IDLE, if the backend
// signalled one.
func (w *watcher) flagsChanged(ctx context.Context, sig *signals, mb string) {
	select {
	case <-sig.changed:
		w.o.apply(ctx, event.Hint{User: w.user, Mailbox: decodedName(mb), What: event.Flags})
	default:
	}
}

// check looks at the registered mailboxes (all, or only the first) and
// reports what it sees to the owner, leaving the first mailbox selected for
// IDLE. Mailboxes the backend refuses (e.g. deleted ones) are skipped.
func (w *watcher) check(ctx context.Context, c *imapclient.Client, sig *signals, mailboxes []string, all bool) error {
	// Other mailboxes first, so STATUS never targets the selected one
	// (RFC 9051 section 6.3.11).
	for i := len(mailboxes) - 1; i >= 0; i-- {
		if i > 0 && !all {
			continue
		}
		mb := mailboxes[i]
		name, err := imapwire.DecodeMailbox(mb)
		if err != nil {
			w.log.Warn("mailbox name is not valid modified UTF-7, skipped", "mailbox", mb)
			continue
		}
		st, messages, err := mailboxLook(c, name, i == 0)
		if err := skippable(err); err != nil {
			return fmt.Errorf("check %s: %w", mb, err)
		}
		if i == 0 && err == nil {
			sig.looked.Store(messages)
		}
		if err != nil {
			w.log.Debug("mailbox refused by the backend", "mailbox", mb, "err", err)
			continue
		}
		if i == 0 {
			// Changes the backend reported with the new mail (Dovecot
			// sends both after the same delay) go first, so that the
			// new mail's push carries them instead of being followed by
			// a push of their own.
			w.flagsChanged(ctx, sig, mb)
		}
		w.o.apply(ctx, event.Hint{User: w.user, Mailbox: decodedName(mb), UIDValidity: st.UIDValidity, UIDNext: st.UIDNext})
	}
	return nil
}

// mailboxState asks the backend for one mailbox's UIDVALIDITY and UIDNEXT:
// with EXAMINE for the mailbox to IDLE on, else with STATUS.
func mailboxState(c *imapclient.Client, name string, examine bool) (store.MailboxState, error) {
	st, _, err := mailboxLook(c, name, examine)
	return st, err
}

// mailboxLook is mailboxState, also returning the number of messages when
// it examined the mailbox.
func mailboxLook(c *imapclient.Client, name string, examine bool) (st store.MailboxState, messages uint32, err error) {
	err = timed(c, func() error {
		if examine {
			data, err := c.Select(name, &imap.SelectOptions{ReadOnly: true}).Wait()
			if err == nil {
				st = store.MailboxState{UIDValidity: data.UIDValidity, UIDNext: uint32(data.UIDNext)}
				messages = data.NumMessages
			}
			return err
		}
		data, err := c.Status(name, &imap.StatusOptions{UIDNext: true, UIDValidity: true}).Wait()
		if err == nil {
			st = store.MailboxState{UIDValidity: data.UIDValidity, UIDNext: uint32(data.UIDNext)}
		}
		return err
	})
	return st, messages, err
}

// skippable returns nil for a refusal by the server (NO/BAD), which concerns
// one mailbox, and err for anything else, which ends the session.
func skippable(err error) error {
	var imapErr *imap.Error
	if err == nil || errors.As(err, &imapErr) {
		return nil
	}
	return err
}
