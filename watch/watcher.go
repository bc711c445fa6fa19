package watch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/xapsproxy/xapsproxy/event"
	"github.com/xapsproxy/xapsproxy/internal/imapwire"
	"github.com/xapsproxy/xapsproxy/store"
)

// watcher watches the mailboxes of one user. Its goroutine (run) owns the
// backend connection; the manager tells it about a new mailbox set with
// setMailboxes and ends it with stop.
type watcher struct {
	m    *Manager
	user string
	log  *slog.Logger

	mu        sync.Mutex
	mailboxes []string
	changed   chan struct{} // 1-buffered: mailboxes changed

	cancel context.CancelFunc
	done   chan struct{}

	// Owned by run: the state last stored per mailbox, so a check reads the
	// store only for a mailbox it has not seen yet; what the watcher is
	// doing; how many connections it has opened.
	known        map[string]store.MailboxState
	state        State
	dials        int
	troubleSince time.Time // first failure since the watcher last watched
}

func (m *Manager) startWatcher(ctx context.Context, user string, mailboxes []string) *watcher {
	wctx, cancel := context.WithCancel(ctx)
	w := &watcher{
		m:         m,
		user:      user,
		log:       m.log.With("user", user),
		mailboxes: mailboxes,
		changed:   make(chan struct{}, 1),
		cancel:    cancel,
		done:      make(chan struct{}),
		known:     make(map[string]store.MailboxState),
		state:     StateConnecting,
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

func (w *watcher) setMailboxes(mailboxes []string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if slices.Equal(w.mailboxes, mailboxes) {
		return
	}
	w.mailboxes = mailboxes
	select {
	case w.changed <- struct{}{}:
	default:
	}
}

func (w *watcher) snapshot() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.mailboxes
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

// session logs in, catches up, and waits in IDLE until the connection fails
// or ctx is done. It returns when it logged in (zero if it did not).
func (w *watcher) session(ctx context.Context) (loggedIn time.Time, err error) {
	wake := make(chan struct{}, 1)
	c, err := w.connect(ctx, wake)
	if err != nil {
		return time.Time{}, err
	}
	loggedIn = time.Now()
	defer c.Close()
	defer w.setState(StateConnecting)
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	for {
		if err := w.check(ctx, c); err != nil {
			return loggedIn, err
		}
		idle, err := c.Idle()
		if err != nil {
			return loggedIn, fmt.Errorf("idle: %w", err)
		}
		w.watching()
		t := time.NewTimer(w.m.opts.PollInterval)
		select {
		case <-wake:
		case <-w.changed:
		case <-t.C:
		case <-ctx.Done():
		case <-c.Closed():
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
func (w *watcher) connect(ctx context.Context, wake chan<- struct{}) (*imapclient.Client, error) {
	m := w.m
	for {
		epoch, err := m.gate.wait(ctx, func() { w.setState(StateUnreachable) })
		if err != nil {
			return nil, err
		}
		w.setState(StateConnecting)
		if err := m.logins.acquire(ctx); err != nil {
			return nil, err
		}
		if !m.gate.isOpen(epoch) { // it closed while we queued
			m.logins.release()
			continue
		}
		c, err := w.login(ctx, wake)
		down := err != nil && ctx.Err() == nil && isUnreachable(err)
		if down {
			m.gate.fail(epoch, err)
		}
		m.logins.release()
		if !down {
			return c, err
		}
		w.troubled()
	}
}

// login dials the backend and logs in as the watcher's user.
func (w *watcher) login(ctx context.Context, wake chan<- struct{}) (*imapclient.Client, error) {
	m := w.m
	if w.dials > 0 {
		m.stats.reconnects.Add(1)
	}
	w.dials++
	c, err := m.dial(ctx, wake)
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

// check compares every watched mailbox with its stored state, reports news,
// and leaves the first mailbox (INBOX when registered) selected for IDLE; the
// others are only seen by STATUS, every PollInterval. Mailboxes the backend
// refuses (e.g. deleted ones) are skipped.
func (w *watcher) check(ctx context.Context, c *imapclient.Client) error {
	mailboxes := w.snapshot()
	// Other mailboxes first, so STATUS never targets the selected one
	// (RFC 9051 section 6.3.11).
	for i := len(mailboxes) - 1; i >= 0; i-- {
		mb := mailboxes[i]
		name, err := imapwire.DecodeMailbox(mb)
		if err != nil {
			w.log.Warn("mailbox name is not valid modified UTF-7, skipped", "mailbox", mb)
			continue
		}
		st, err := mailboxState(c, name, i == 0)
		if err := skippable(err); err != nil {
			return fmt.Errorf("check %s: %w", mb, err)
		}
		if err != nil {
			w.log.Debug("mailbox refused by the backend", "mailbox", mb, "err", err)
			continue
		}
		w.compare(ctx, mb, st)
	}
	return nil
}

// mailboxState asks the backend for one mailbox's UIDVALIDITY and UIDNEXT:
// with EXAMINE for the mailbox to IDLE on, else with STATUS.
func mailboxState(c *imapclient.Client, name string, examine bool) (store.MailboxState, error) {
	var st store.MailboxState
	err := timed(c, func() error {
		if examine {
			data, err := c.Select(name, &imap.SelectOptions{ReadOnly: true}).Wait()
			if err == nil {
				st = store.MailboxState{UIDValidity: data.UIDValidity, UIDNext: uint32(data.UIDNext)}
			}
			return err
		}
		data, err := c.Status(name, &imap.StatusOptions{UIDNext: true, UIDValidity: true}).Wait()
		if err == nil {
			st = store.MailboxState{UIDValidity: data.UIDValidity, UIDNext: uint32(data.UIDNext)}
		}
		return err
	})
	return st, err
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

// compare reports new mail when UIDNEXT grew since the stored state, then
// stores the new state. A mailbox seen for the first time only sets the
// baseline; a new UIDVALIDITY means the mailbox was rebuilt, which is news too.
func (w *watcher) compare(ctx context.Context, mailbox string, st store.MailboxState) {
	sctx, cancel := context.WithTimeout(ctx, storeTimeout)
	defer cancel()
	s := w.m.opts.Store
	prev, ok := w.known[mailbox]
	var err error
	if !ok {
		prev, err = s.MailboxState(sctx, w.user, mailbox)
	}
	switch {
	case errors.Is(err, store.ErrNotFound):
	case err != nil:
		w.log.Error("cannot read mailbox state", "mailbox", mailbox, "err", err)
		return
	case prev == st:
		w.known[mailbox] = st
		return
	case prev.UIDValidity != st.UIDValidity || st.UIDNext > prev.UIDNext:
		w.log.Info("new mail", "mailbox", mailbox, "uidnext", st.UIDNext)
		w.m.opts.Notifier.Notify(event.Event{User: w.user, Mailbox: mailbox, Kind: event.KindNew})
	}
	if err := s.SetMailboxState(sctx, w.user, mailbox, st); err != nil {
		w.log.Error("cannot store mailbox state", "mailbox", mailbox, "err", err)
		return
	}
	w.known[mailbox] = st
}
