// Package watch keeps exactly one backend session per account that has live
// registrations, and reports mailbox events to a Notifier.
//
// The Manager owns the set of watchers: it starts one for every stored user
// when it runs, and converges again for a user each time Sync is called (after
// a registration is stored or deleted). Each watcher logs in to the backend as
// the user through the Dovecot master user, catches up with the UIDNEXT last
// stored for each mailbox, and then waits for news with IDLE.
package watch

import (
	"context"
	"crypto/tls"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/xapsproxy/xapsproxy/config"
	"github.com/xapsproxy/xapsproxy/event"
	"github.com/xapsproxy/xapsproxy/store"
)

// Defaults for Options fields left zero.
const (
	DefaultPollInterval = time.Minute
	DefaultMinBackoff   = time.Second
	DefaultMaxBackoff   = 5 * time.Minute
	// DefaultGreetingTimeout bounds the wait for the backend's greeting
	// (and TLS) once the TCP connection is up.
	DefaultGreetingTimeout = 5 * time.Second
	connectTimeout         = 15 * time.Second // the TCP connect
	commandTimeout         = time.Minute
	storeTimeout           = 10 * time.Second
	healthyAfter           = time.Minute     // a session this old resets the backoff
	resyncInterval         = 5 * time.Minute // how often every user is converged again
)

// Options configures a Manager.
type Options struct {
	Store    store.Store    // required
	Notifier event.Notifier // required; receives events, must not block
	Backend  config.Backend
	// BackendTLS verifies the backend when Backend.TLS is not "none"; nil
	// means Backend.BaseTLSConfig() (system roots, no ca_file).
	BackendTLS *tls.Config
	// Watch holds the master user credentials (auth = "master") and
	// MaxConcurrentLogins (zero means config.DefaultMaxConcurrentLogins).
	Watch config.Watch
	// Credentials log watchers in; nil means MasterCredentials from Watch.
	Credentials Credentials
	// PollInterval is how often mailboxes other than the one in IDLE are
	// checked with STATUS; zero means DefaultPollInterval.
	PollInterval time.Duration
	// MinBackoff and MaxBackoff bound the jittered exponential wait between
	// reconnects; zero means the defaults.
	MinBackoff, MaxBackoff time.Duration
	// GreetingTimeout bounds TLS and the greeting after the TCP connect;
	// zero means DefaultGreetingTimeout.
	GreetingTimeout time.Duration
	// Logger; nil discards.
	Logger *slog.Logger
}

// Manager keeps one watcher per user with registrations.
type Manager struct {
	opts Options
	log  *slog.Logger

	mu    sync.Mutex
	dirty map[string]struct{} // users to converge
	wake  chan struct{}

	creds  Credentials
	logins limiter // shared by the watchers
	gate   *gate   // shared by the watchers; its prober runs in Run
	stats  counters
}

// New returns a manager; it does no I/O.
func New(opts Options) *Manager {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.PollInterval == 0 {
		opts.PollInterval = DefaultPollInterval
	}
	if opts.MinBackoff == 0 {
		opts.MinBackoff = DefaultMinBackoff
	}
	if opts.MaxBackoff == 0 {
		opts.MaxBackoff = DefaultMaxBackoff
	}
	if opts.GreetingTimeout == 0 {
		opts.GreetingTimeout = DefaultGreetingTimeout
	}
	if opts.Watch.MaxConcurrentLogins <= 0 {
		opts.Watch.MaxConcurrentLogins = config.DefaultMaxConcurrentLogins
	}
	if opts.Credentials == nil {
		opts.Credentials = MasterCredentials{User: opts.Watch.MasterUser, Password: opts.Watch.MasterPassword, Separator: opts.Watch.MasterSeparator}
	}
	m := &Manager{
		creds:  opts.Credentials,
		opts:   opts,
		log:    opts.Logger,
		dirty:  make(map[string]struct{}),
		wake:   make(chan struct{}, 1),
		logins: newLimiter(opts.Watch.MaxConcurrentLogins),
	}
	m.gate = newGate(m)
	return m
}

// Sync asks the manager to bring the watcher of user in line with the
// user's stored registrations. It never blocks.
func (m *Manager) Sync(user string) {
	m.mu.Lock()
	m.dirty[user] = struct{}{}
	m.mu.Unlock()
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// Run starts a watcher for every stored user and keeps converging until ctx
// is done; it returns after every watcher and the backend prober have
// stopped.
func (m *Manager) Run(ctx context.Context) error {
	watchers := make(map[string]*watcher)
	var prober sync.WaitGroup
	prober.Go(func() { m.gate.run(ctx) })
	defer func() {
		for _, w := range watchers {
			w.stop()
		}
		prober.Wait()
	}()

	resync := time.NewTicker(resyncInterval)
	defer resync.Stop()
	m.syncAll(ctx, watchers)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-resync.C:
			m.syncAll(ctx, watchers)
		case <-m.wake:
		}
		m.mu.Lock()
		dirty := m.dirty
		m.dirty = make(map[string]struct{})
		m.mu.Unlock()
		for user := range dirty {
			m.converge(ctx, watchers, user)
		}
	}
}

// syncAll marks every stored user and every watched user for converging: at
// startup, and now and then to catch changes made outside this process (such
// as `xapsproxy registrations delete`).
func (m *Manager) syncAll(ctx context.Context, watchers map[string]*watcher) {
	sctx, cancel := context.WithTimeout(ctx, storeTimeout)
	users, err := m.opts.Store.Users(sctx)
	cancel()
	if err != nil {
		m.log.Error("cannot list registered users", "err", err)
	}
	for u := range watchers {
		users = append(users, u)
	}
	for _, u := range users {
		m.Sync(u)
	}
}

// converge starts, updates or stops the watcher of one user.
func (m *Manager) converge(ctx context.Context, watchers map[string]*watcher, user string) {
	sctx, cancel := context.WithTimeout(ctx, storeTimeout)
	regs, err := m.opts.Store.Registrations(sctx, user)
	cancel()
	if err != nil {
		m.log.Error("cannot read registrations", "user", user, "err", err)
		return
	}
	mailboxes := mailboxUnion(regs)
	w := watchers[user]
	switch {
	case len(mailboxes) == 0 && w != nil:
		w.stop()
		delete(watchers, user)
		m.log.Info("stopped watching", "user", user)
	case len(mailboxes) == 0:
	case w == nil:
		watchers[user] = m.startWatcher(ctx, user, mailboxes)
		m.log.Info("watching", "user", user, "mailboxes", len(mailboxes))
	default:
		w.setMailboxes(mailboxes)
	}
}

// maxMailboxes bounds the mailboxes watched for one user: each is a STATUS
// every PollInterval, whatever its devices registered.
const maxMailboxes = 1000

// mailboxUnion is every mailbox some registration asks for, INBOX first, at
// most maxMailboxes.
func mailboxUnion(regs []store.Registration) []string {
	var out []string
	seen := make(map[string]bool)
	for _, r := range regs {
		for _, mb := range r.Mailboxes {
			if !seen[mb] {
				seen[mb] = true
				out = append(out, mb)
			}
		}
	}
	slices.SortStableFunc(out, func(a, b string) int {
		switch {
		case a == "INBOX" && b != "INBOX":
			return -1
		case b == "INBOX" && a != "INBOX":
			return 1
		}
		return 0
	})
	if len(out) > maxMailboxes {
		out = out[:maxMailboxes]
	}
	return out
}
