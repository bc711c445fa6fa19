package watch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

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
	known map[string]store.MailboxState
	state State
	dials int
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

// run keeps a backend session going, reconnecting with jittered exponential
// backoff so that a backend coming back is not hit by every watcher at once.
func (w *watcher) run(ctx context.Context) {
	backoff := w.m.opts.MinBackoff
	for {
		start := time.Now()
		err := w.session(ctx)
		if ctx.Err() != nil {
			return
		}
		if time.Since(start) > healthyAfter {
			backoff = w.m.opts.MinBackoff
		}
		// Equal jitter: a random wait in [backoff/2, backoff].
		delay := backoff/2 + rand.N(backoff/2+1)
		w.log.Warn("backend session ended, reconnecting", "err", err, "delay", delay.Round(time.Millisecond))
		w.setState(StateBackoff)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, w.m.opts.MaxBackoff)
		w.setState(StateConnecting)
	}
}

// session logs in, catches up, and waits in IDLE until the connection fails
// or ctx is done.
func (w *watcher) session(ctx context.Context) error {
	wake := make(chan struct{}, 1)
	c, err := w.connect(ctx, wake)
	if err != nil {
		return err
	}
	defer c.Close()
	defer w.setState(StateConnecting)
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	for {
		if err := w.check(ctx, c); err != nil {
			return err
		}
		idle, err := c.Idle()
		if err != nil {
			return fmt.Errorf("idle: %w", err)
		}
		w.setState(StateWatching)
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
			return fmt.Errorf("idle: %w", err)
		}
		if err := timed(c, idle.Wait); err != nil {
			return fmt.Errorf("idle: %w", err)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}

// connect returns a backend connection logged in as the watcher's user. It
// holds one of the manager's login slots from the TCP connect to the
// answer to LOGIN, so that however many watchers need a connection at
// once, the backend sees at most Watch.MaxConcurrentLogins of them arrive
// together.
func (w *watcher) connect(ctx context.Context, wake chan<- struct{}) (*imapclient.Client, error) {
	m := w.m
	if err := m.logins.acquire(ctx); err != nil {
		return nil, err
	}
	defer m.logins.release()
	if w.dials > 0 {
		m.stats.reconnects.Add(1)
	}
	w.dials++
	c, err := m.dial(ctx, wake)
	if err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { c.Close() })
	err = m.login(c, w.user)
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
		w.m.opts.Notifier.Notify(Event{User: w.user, Mailbox: mailbox, Kind: KindNew})
	}
	if err := s.SetMailboxState(sctx, w.user, mailbox, st); err != nil {
		w.log.Error("cannot store mailbox state", "mailbox", mailbox, "err", err)
		return
	}
	w.known[mailbox] = st
}
