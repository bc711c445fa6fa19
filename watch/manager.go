// Package watch keeps, for every account with live registrations, one owner
// that decides what is new, and the event source that feeds it.
//
// The Manager converges on the store: it makes an owner for every stored
// user when it runs, and again for a user each time Sync is called (after a
// registration is stored or deleted). The source is the same for every
// account:
//   - SourceEvents: Dovecot's own events, posted to the proxy and handed to
//     Hint; no backend connection per account. When the manager starts, a
//     rate-limited catch-up looks at every registered mailbox once (STATUS
//     through the configured Credentials), for the mail that came while the
//     proxy was away.
//   - SourceIdle: one backend connection per account, in IDLE on the first
//     registered mailbox (INBOX when registered) for up to 29 minutes at a
//     time; other registered mailboxes are looked at every PollInterval.
//
// Every source only reports hints; owner.apply compares them with the
// stored state and notifies the Notifier of new mail and changes.
//
// Every backend connection (IDLE, NOTIFY, the catch-up's looks, Probe) is
// internal/imapnotify's client, which starts no goroutine: an account's
// connection is read and written by its watcher's goroutine alone. An
// account watched with IDLE costs 12-13 KiB of heap and stack
// (TestMemoryPerIdleAccount).
package watch

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/xapsproxy/xapsproxy/config"
	"github.com/xapsproxy/xapsproxy/event"
	"github.com/xapsproxy/xapsproxy/store"
)

// Event sources (Options.Source).
const (
	// SourceEvents: Dovecot's own events reach the manager through Hint.
	SourceEvents = "dovecot"
	// SourceIdle: one backend connection per account, in IDLE.
	SourceIdle = "idle"
	// SourceNotify: one backend connection per account, in NOTIFY
	// (RFC 5465); IDLE if the backend turns out not to offer it.
	SourceNotify = "notify"
	// SourceAuto: SourceNotify when the backend offers NOTIFY after
	// login, else SourceIdle.
	SourceAuto = "auto"
)

// Defaults for Options fields left zero.
const (
	DefaultPollInterval = 2 * time.Minute
	// DefaultCatchUpRate is how many accounts a second the catch-up of
	// SourceEvents looks at, at most.
	DefaultCatchUpRate = 50
	// idleRestart is how long an IDLE lasts when nothing wakes it: the
	// server may end an IDLE idle for 30 minutes (RFC 9051 section 6.3.13).
	idleRestart = 29 * time.Minute
	// hintQueue bounds the hints waiting for a worker; past it, the
	// account is caught up by a look instead.
	hintQueue = 16384
	// hintWorkers apply hints at once; each waits for its commit (the
	// mailbox state and outbox entry) in the store's group commit, so
	// sixteen waiting make batches of up to sixteen: a burst of mail to
	// every account commits at the rate the push stage sends.
	hintWorkers       = 16
	DefaultMinBackoff = time.Second
	DefaultMaxBackoff = 5 * time.Minute
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
	// Source is SourceEvents, SourceAuto, SourceNotify or SourceIdle; ""
	// means SourceAuto.
	Source string
	// PollInterval is how often SourceIdle looks at the registered
	// mailboxes other than the one in IDLE, with STATUS; zero means
	// DefaultPollInterval. An account with one registered mailbox is never
	// polled.
	PollInterval time.Duration
	// CatchUpRate bounds the accounts looked at per second by the catch-up
	// of SourceEvents; zero means DefaultCatchUpRate.
	CatchUpRate float64
	// CatchUpInterval is how often SourceEvents looks at every account
	// again after the start; zero means never.
	CatchUpInterval time.Duration
	// MinBackoff and MaxBackoff bound the jittered exponential wait between
	// reconnects; zero means the defaults.
	MinBackoff, MaxBackoff time.Duration
	// GreetingTimeout bounds TLS and the greeting after the TCP connect;
	// zero means DefaultGreetingTimeout.
	GreetingTimeout time.Duration
	// Logger; nil discards.
	Logger *slog.Logger
	// Owns, when set, says whether this instance owns user (several
	// instances share the accounts, see package cluster): the manager
	// makes owners and watchers only for owned users, and Sync of a user
	// not owned drops its owner. nil = every user is this instance's.
	Owns func(user string) bool
}

// Manager keeps one watcher per user with registrations.
type Manager struct {
	opts Options
	log  *slog.Logger

	// converging is held while an owner is made, changed or dropped, so
	// that Release cannot miss a watcher converge is starting.
	converging sync.Mutex

	mu     sync.Mutex
	dirty  map[string]struct{} // users to converge
	owners map[string]*owner   // written by Run only; read by Hint
	wake   chan struct{}

	hints    chan queuedHint // to the hint workers
	noNotify atomic.Bool     // SourceAuto: the backend was found without NOTIFY
	catchUp  *catchUp        // accounts to look at (SourceEvents)
	// baselines: one Baseline per account at a time
	baselines userLocks

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
	if opts.Source == "" {
		opts.Source = SourceAuto
	}
	if opts.CatchUpRate <= 0 {
		opts.CatchUpRate = DefaultCatchUpRate
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
		owners: make(map[string]*owner),
		wake:   make(chan struct{}, 1),
		hints:  make(chan queuedHint, hintQueue),
		logins: newLimiter(opts.Watch.MaxConcurrentLogins),
	}
	m.gate = newGate(m)
	m.catchUp = newCatchUp(m)
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

// Run makes an owner for every stored user and keeps converging until ctx
// is done; it returns after every watcher, hint worker, the catch-up and
// the backend prober have stopped.
func (m *Manager) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Go(func() { m.gate.run(ctx) })
	for range hintWorkers {
		wg.Go(func() { m.applyHints(ctx) })
	}
	wg.Go(func() { m.catchUp.run(ctx) })
	defer func() {
		m.mu.Lock()
		owners := m.owners
		m.owners = make(map[string]*owner)
		m.mu.Unlock()
		for _, o := range owners {
			if o.conn != nil {
				o.conn.stop()
			}
		}
		wg.Wait()
	}()

	resync := time.NewTicker(resyncInterval)
	defer resync.Stop()
	m.syncAll(ctx)
	// With SourceEvents, every account is looked at after the start and
	// then every CatchUpInterval: an event Dovecot could not post (the
	// proxy hung, its listener full) is found that late at the latest.
	var sweep <-chan time.Time
	if m.opts.Source == SourceEvents && m.opts.CatchUpInterval > 0 {
		t := time.NewTicker(m.opts.CatchUpInterval)
		defer t.Stop()
		sweep = t.C
	}
	starting := true
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-resync.C:
			m.syncAll(ctx)
		case <-sweep:
			starting = true
		case <-m.wake:
		}
		m.mu.Lock()
		dirty := m.dirty
		m.dirty = make(map[string]struct{})
		m.mu.Unlock()
		for user := range dirty {
			m.converge(ctx, user)
		}
		if starting && m.opts.Source == SourceEvents {
			// Mail may have come while the proxy was away, or its
			// event was lost.
			m.mu.Lock()
			for user := range m.owners {
				m.catchUp.add(user)
			}
			m.mu.Unlock()
		}
		starting = false
	}
}

// syncAll marks every stored user and every owned user for converging: at
// startup, and now and then to catch changes made outside this process (such
// as `xapsproxy registrations delete`).
func (m *Manager) syncAll(ctx context.Context) {
	sctx, cancel := context.WithTimeout(ctx, storeTimeout)
	users, err := m.opts.Store.Users(sctx)
	cancel()
	if err != nil {
		m.log.Error("cannot list registered users", "err", err)
	}
	m.mu.Lock()
	for u := range m.owners {
		users = append(users, u)
	}
	m.mu.Unlock()
	for _, u := range users {
		m.Sync(u)
	}
}

// converge makes, updates or drops the owner of one user, and starts or
// stops its connection.
func (m *Manager) converge(ctx context.Context, user string) {
	var mailboxes []string
	if m.owns(user) {
		sctx, cancel := context.WithTimeout(ctx, storeTimeout)
		regs, err := m.opts.Store.Registrations(sctx, user)
		cancel()
		if err != nil {
			m.log.Error("cannot read registrations", "user", user, "err", err)
			return
		}
		mailboxes = mailboxUnion(regs)
	}
	m.converging.Lock()
	defer m.converging.Unlock()
	if !m.owns(user) {
		mailboxes = nil // lost while the registrations were read
	}
	created := false
	m.mu.Lock()
	o := m.owners[user]
	switch {
	case len(mailboxes) == 0 && o != nil:
		delete(m.owners, user)
	case len(mailboxes) == 0:
	case o == nil:
		o = newOwner(m, user, mailboxes)
		m.owners[user] = o
		created = true
	}
	m.mu.Unlock()
	if created && m.opts.Owns != nil && m.opts.Source == SourceEvents {
		// Taken over from another instance: mail may have come while
		// nobody owned the account.
		m.catchUp.add(user)
	}
	switch {
	case len(mailboxes) == 0 && o != nil:
		o.release()
		m.log.Info("stopped watching", "user", user)
	case len(mailboxes) == 0:
	case o.conn == nil && m.opts.Source != SourceEvents:
		w := m.startWatcher(ctx, o)
		m.mu.Lock() // CredentialsChanged reads it
		o.conn = w
		m.mu.Unlock()
		m.log.Info("watching", "user", user, "mailboxes", len(mailboxes), "source", m.opts.Source)
	case o.setMailboxes(mailboxes) && o.conn != nil:
		o.conn.mailboxesChanged()
	}
}

// owns reports whether this instance owns user (Options.Owns).
func (m *Manager) owns(user string) bool {
	return m.opts.Owns == nil || m.opts.Owns(user)
}

// Release stops watching user at once: it drops the user's owner, stops its
// connection, and waits for the connection and any hint being applied to
// finish, so that no event of user comes from this manager afterwards
// (until user is synced again while owned). For a cluster's OnLose; call it
// once Options.Owns(user) is false. It returns ctx's error if ctx is done
// first, and nil for a user not watched.
func (m *Manager) Release(ctx context.Context, user string) error {
	done := make(chan struct{})
	go func() { // ends once the watcher has, even if ctx is done first
		defer close(done)
		// Under converging, converge is not half-way through making
		// the owner; once it is dropped, converge makes none again
		// (Owns is false). Stopping it can then run beside other
		// Releases.
		m.converging.Lock()
		m.mu.Lock()
		o := m.owners[user]
		delete(m.owners, user)
		m.mu.Unlock()
		m.converging.Unlock()
		if o != nil {
			o.release()
			m.log.Info("stopped watching: another instance owns the account now", "user", user)
		}
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("release %s: %w", user, ctx.Err())
	}
}

// CredentialsChanged tells the account's connection, if it waits for a
// credential (StateNoCredential), that there may be one now.
func (m *Manager) CredentialsChanged(user string) {
	m.mu.Lock()
	var w *watcher
	if o := m.owners[user]; o != nil {
		w = o.conn
	}
	m.mu.Unlock()
	if w != nil {
		w.mailboxesChanged()
	}
}

// Owners returns how many accounts have an owner.
func (m *Manager) Owners() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.owners)
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
