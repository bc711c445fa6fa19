package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/xapsproxy/xapsproxy/admin"
	"github.com/xapsproxy/xapsproxy/cluster"
	"github.com/xapsproxy/xapsproxy/config"
	"github.com/xapsproxy/xapsproxy/credential"
	"github.com/xapsproxy/xapsproxy/dovecot"
	"github.com/xapsproxy/xapsproxy/event"
	"github.com/xapsproxy/xapsproxy/proxy"
	"github.com/xapsproxy/xapsproxy/push"
	"github.com/xapsproxy/xapsproxy/store"
	"github.com/xapsproxy/xapsproxy/watch"
)

// Shutdown waits: for sessions to end after SIGTERM, and for queued pushes.
const (
	shutdownGrace    = 10 * time.Second
	pushDrainTimeout = 5 * time.Second
)

func serveCmd(ctx context.Context, args []string, stderr io.Writer) error {
	cmd := newConfigCommand("serve")
	fs := cmd.fs
	debug := fs.Bool("debug", false, "log debug lines whatever [log] level says (never passwords or message data)")
	cfg, err := cmd.load(args)
	if err != nil {
		return err
	}
	log := newConfigLogger(stderr, cfg.Log, *debug)
	// Caught before the start-up, so that a SIGHUP meanwhile (a reload,
	// logrotate) is a reload once serving, not the end of the process.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	a, err := newApp(ctx, cfg, log, nil)
	if err != nil {
		return err
	}
	a.reload = hup
	return a.run(ctx)
}

// app is one running xapsproxy: the store, the proxy's listeners, the watch
// manager and the pusher, wired together.
type app struct {
	cfg   *config.Config
	log   *slog.Logger
	lock  *store.LockFile // held for the life of the process: one pusher per store
	store store.Store
	topic string
	// apnsExpires is the APNs certificate's NotAfter (unix seconds; 0 for
	// a token key or a sender given by a test): set by open and by a
	// reload in run, read by the admin listener's scrapes.
	apnsExpires atomic.Int64

	proxy  *proxy.Server
	cert   *proxy.Certificate
	apns   *push.APNs // nil when a test gave the sender
	watch  *watch.Manager
	pusher *push.Pusher
	// cluster shares the accounts with the other instances on the same
	// PostgreSQL; nil with SQLite.
	cluster *cluster.Cluster
	relay   *hintRelay // Dovecot's events for accounts other instances own; nil with SQLite
	admin   *http.Server
	events  *http.Server // Dovecot's own events; nil when [events] has no secret

	// reload, when it delivers, makes run read the proxy's certificate and
	// the APNs credential again (SIGHUP after a renewal).
	reload <-chan os.Signal

	tlsLn, startTLSLn, adminLn, eventsLn net.Listener

	// serving is true from when run serves the listeners to when it shuts
	// down, for /readyz.
	serving atomic.Bool

	sourceWhy string // why the watch source is what it is, for the start-up log
}

// newApp opens the store, loads certificates and binds the listeners, so
// that every configuration mistake is reported before anything runs, as
// one config.Error naming the key and the fix. It logs nothing before it
// succeeds. With a nil sender, pushes go to APNs with the configured
// credentials.
func newApp(ctx context.Context, cfg *config.Config, log *slog.Logger, sender push.Sender) (*app, error) {
	a := &app{cfg: cfg, log: log}
	if err := a.open(ctx, sender); err != nil {
		a.close()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("interrupted while starting: %w", ctx.Err())
		}
		return nil, err
	}
	return a, nil
}

// open does the work of newApp; what it opened before failing is released
// by close.
func (a *app) open(ctx context.Context, sender push.Sender) error {
	cfg, log := a.cfg, a.log
	// The lock comes first: a second serve on the same store learns that,
	// not that its ports are taken.
	var err error
	// A PostgreSQL store has none: several instances share it.
	if a.lock, err = lockStore(cfg); err != nil {
		return err
	}
	var credentials string // described in the log once everything is ready
	if sender == nil {
		creds, err := push.LoadCredentials(cfg.APNS, time.Now())
		if err != nil {
			return err
		}
		if a.apns, err = push.NewAPNs(creds, cfg.APNS); err != nil {
			return err
		}
		sender = a.apns
		a.topic = creds.Topic
		credentials = creds.Describe()
		a.setAPNsExpiry(creds)
	} else {
		a.topic = cfg.APNS.Topic
	}
	if a.cert, err = loadCertificate(cfg.Proxy.CertFile, cfg.Proxy.KeyFile); err != nil {
		return err
	}
	backendTLS, err := cfg.Backend.TLSConfig()
	if err != nil {
		return err
	}
	if a.store, err = openStore(ctx, cfg); err != nil {
		return err
	}
	if a.cluster = a.newCluster(); a.cluster != nil {
		mctx, cancel := context.WithTimeout(ctx, postgresOpenTimeout)
		err := cluster.Migrate(mctx, a.store.(*store.Postgres).Pool())
		cancel()
		if err != nil {
			return storeError(cfg.Store, err)
		}
		a.relay = newHintRelay(a.cluster.Owns, func(h event.Hint) { a.watch.Hint(h) }, a.cluster.PublishHint, log.With("part", "cluster"))
	}
	creds, captured, err := a.capturedCredentials()
	if err != nil {
		return err
	}

	sendLatency := admin.NewSendLatency()
	a.pusher = push.New(push.Options{
		Store:   a.store,
		Sender:  sender,
		Logger:  log.With("part", "push"),
		Topic:   a.topic,
		OnPrune: func(user string) { a.synced(context.Background(), user) },
		Owns:    a.ownsFunc(),

		ChangeDelay:    cfg.Watch.ChangeDelay,
		ChangeInterval: cfg.Watch.ChangeInterval,
		OmitMailboxes:  !cfg.APNS.MailboxHash,
		Priority:       cfg.APNS.Priority,
		MaxConcurrent:  cfg.APNS.Concurrency,
		SendLatency:    sendLatency,
	})
	source, why := watchSource(cfg)
	a.sourceWhy = why
	a.watch = watch.New(watch.Options{
		Store:           a.store,
		Notifier:        a.pusher,
		Backend:         cfg.Backend,
		BackendTLS:      backendTLS,
		Watch:           cfg.Watch,
		Credentials:     creds,
		Source:          source,
		PollInterval:    cfg.Watch.PollInterval,
		CatchUpRate:     cfg.Watch.CatchUpRate,
		CatchUpInterval: cfg.Watch.CatchUpInterval,
		Logger:          log.With("part", "watch"),
		Owns:            a.ownsFunc(),
	})
	a.proxy = proxy.New(proxy.Options{
		Backend:             cfg.Backend,
		BackendTLS:          backendTLS,
		TLS:                 a.cert.TLSConfig(),
		Topic:               a.topic,
		Register:            a.register,
		MaxConnections:      cfg.Proxy.MaxConnections,
		MaxConnectionsPerIP: cfg.Proxy.MaxConnectionsPerIP,
		LoginTimeout:        cfg.Proxy.LoginTimeout,
		IdleTimeout:         cfg.Proxy.IdleTimeout,
		WriteTimeout:        cfg.Proxy.WriteTimeout,
		AllowPlaintextAuth:  cfg.Proxy.AllowPlaintextAuth,
		MasterSeparator:     cfg.Watch.MasterSeparator,
		AllowMasterLogins:   cfg.Proxy.AllowMasterLogins,
		ProxyProtocol:       cfg.Proxy.ProxyProtocolPrefixes(),
		Captured:            captured,
		Logger:              log.With("part", "proxy"),
	})
	if a.tlsLn, err = listen(cfg.Proxy.ListenTLS, "proxy.listen_tls"); err != nil {
		return err
	}
	if a.startTLSLn, err = listen(cfg.Proxy.ListenSTARTTLS, "proxy.listen_starttls"); err != nil {
		return err
	}
	if a.adminLn, err = listen(cfg.Admin.Listen, "admin.listen"); err != nil {
		return err
	}
	var events *dovecot.Handler
	if cfg.Events.Secret != "" {
		h, err := dovecot.NewHandler(dovecot.Options{Secret: cfg.Events.Secret, Hint: a.hint, Logger: log.With("part", "events")})
		if err != nil {
			return err
		}
		if a.eventsLn, err = listen(cfg.Events.Listen, "events.listen"); err != nil {
			return err
		}
		a.events = dovecot.NewServer(h, log.With("part", "events"))
		events = h
	}
	if a.adminLn != nil {
		a.adminLn = limitPerIP(a.adminLn, adminConnsPerIP)
		a.admin = &http.Server{Handler: admin.Handler(a.adminOptions(events, sendLatency)), ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout: adminIdleTimeout}
	}
	if credentials != "" {
		log.Info("APNs credentials loaded", "summary", credentials)
		warnExpiry(log, a.apnsExpiry(), time.Now())
	}
	return nil
}

// capturedCredentials returns, with watch.auth = "captured", the store of
// users' passwords that watchers log in with and the proxy's hook that
// fills it; nil and nil mean the master user.
func (a *app) capturedCredentials() (watch.Credentials, func(user, password string), error) {
	if a.cfg.Watch.Auth != config.AuthCaptured {
		return nil, nil, nil
	}
	key, err := credential.LoadKey(a.cfg.Watch.SecretKeyFile)
	if err != nil {
		return nil, nil, err
	}
	cs := credential.New(credential.Options{
		Key:      key,
		Store:    a.store,
		OnChange: func(user string) { a.watch.CredentialsChanged(user) }, // a watcher waiting for a password
		Logger:   a.log.With("part", "credential"),
	})
	return cs, cs.Captured, nil
}

// register is how a registration enters the system: stored durably, then
// the watch manager converges for its user.
func (a *app) register(ctx context.Context, r store.Registration) error {
	if err := a.store.Register(ctx, r); err != nil {
		return err
	}
	// The state of a newly registered mailbox at this moment is its
	// baseline: mail that arrives from now on is pushed, even before the
	// account's source is running. Without it, the source's first look
	// would take that mail for the baseline.
	bctx, cancel := context.WithTimeout(ctx, baselineTimeout)
	defer cancel()
	if err := a.watch.Baseline(bctx, r.User, r.Mailboxes); err != nil {
		a.log.Warn("cannot record the baseline of newly registered mailboxes; their first look sets it", "user", r.User, "err", err)
	}
	a.synced(ctx, r.User)
	return nil
}

// baselineTimeout bounds how long a device waits for its registration's
// answer because of the baseline.
const baselineTimeout = 5 * time.Second

// watchSource resolves watch.source to the manager's source, and says why.
func watchSource(cfg *config.Config) (source, why string) {
	switch cfg.Watch.Source {
	case config.SourceDovecot:
		return watch.SourceEvents, "watch.source = dovecot"
	case config.SourceIdle:
		return watch.SourceIdle, "watch.source = idle"
	case config.SourceNotify:
		return watch.SourceNotify, "watch.source = notify"
	}
	if cfg.Events.Secret != "" {
		return watch.SourceEvents, "watch.source = auto, and [events] has a secret: Dovecot's own events"
	}
	return watch.SourceAuto, "watch.source = auto, and [events] has no secret: NOTIFY where the backend offers it after login, else IDLE"
}

func listen(addr, key string) (net.Listener, error) {
	if addr == "" {
		return nil, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, listenError(key, addr, err)
	}
	return ln, nil
}

// run serves until ctx is done or a listener fails, then shuts down in
// order: clients are told BYE, then watchers and the pusher stop.
func (a *app) run(ctx context.Context) error {
	defer a.close()
	failed := make(chan error, 6)
	var serving sync.WaitGroup
	serve := func(f func() error) {
		serving.Go(func() {
			if err := f(); err != nil && !errors.Is(err, proxy.ErrServerClosed) && !errors.Is(err, http.ErrServerClosed) {
				failed <- err
			}
		})
	}
	if a.cfg.Store.IsPostgres() {
		a.log.Info("store", "postgres", a.cfg.Store.Where()) // the password redacted
	} else {
		a.log.Info("store", "path", a.cfg.Store.Path)
	}
	a.log.Info("event source", "source", a.watch.Stats().Source, "why", a.sourceWhy)
	if a.tlsLn != nil {
		serve(func() error { return a.proxy.ServeTLS(a.tlsLn) })
		a.log.Info("listening", "tls", a.tlsLn.Addr().String())
	}
	if a.startTLSLn != nil {
		serve(func() error { return a.proxy.ServeSTARTTLS(a.startTLSLn) })
		a.log.Info("listening", "starttls", a.startTLSLn.Addr().String())
	}
	if a.admin != nil {
		serve(func() error { return a.admin.Serve(a.adminLn) })
		a.log.Info("admin listening", "addr", a.adminLn.Addr().String())
	}
	// Watchers and the pusher outlive ctx for an orderly shutdown below.
	watchCtx, stopWatch := context.WithCancel(context.WithoutCancel(ctx))
	pushCtx, stopPush := context.WithCancel(context.WithoutCancel(ctx))
	var watching, pushing sync.WaitGroup
	watching.Go(func() { a.watch.Run(watchCtx) })
	pushing.Go(func() { a.pusher.Run(pushCtx) })
	// The cluster hands its accounts over when it stops, which needs the
	// manager and the pusher running: it stops before them.
	clusterCtx, stopCluster := context.WithCancel(context.WithoutCancel(ctx))
	defer stopCluster()
	var clustering sync.WaitGroup
	if a.cluster != nil {
		clustering.Go(func() {
			if err := a.cluster.Run(clusterCtx); err != nil {
				failed <- fmt.Errorf("cluster: %w", err)
			}
		})
		clustering.Go(func() { a.relay.run(clusterCtx) })
		a.log.Info("cluster joined", "instance", a.cluster.ID())
	}
	if a.events != nil {
		serve(func() error { return a.events.Serve(a.eventsLn) })
		a.log.Info("events listening", "addr", a.eventsLn.Addr().String())
	}
	a.serving.Store(true)

	daily := time.NewTicker(expiryCheckEvery)
	defer daily.Stop()
	var err error
	for err == nil && ctx.Err() == nil {
		select {
		case <-daily.C:
			warnExpiry(a.log, a.apnsExpiry(), time.Now())
		case <-ctx.Done():
		case err = <-failed:
			a.log.Error("listener failed, shutting down", "err", err)
		case <-a.reload:
			if rerr := a.cert.Reload(); rerr != nil {
				a.log.Error("certificate not reloaded; keeping the current one", "err", rerr)
			} else {
				a.log.Info("certificate reloaded")
			}
			a.reloadAPNs(time.Now())
		}
	}
	a.serving.Store(false)
	a.log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	if serr := a.proxy.Shutdown(sctx); serr != nil {
		a.log.Warn("sessions did not end in time", "err", serr)
	}
	if a.admin != nil {
		a.admin.Shutdown(sctx)
	}
	if a.events != nil {
		a.events.Shutdown(sctx)
	}
	serving.Wait()
	stopCluster()
	clustering.Wait()
	stopWatch()
	watching.Wait()
	// The watchers stored the mailbox state behind every event they reported,
	// so a push still queued now would be missed after a restart: give the
	// pusher a moment to send it.
	drain(a.pusher, pushDrainTimeout)
	stopPush()
	pushing.Wait()
	return err
}

// drain waits until the pusher has nothing left to send, or timeout.
func drain(p *push.Pusher, timeout time.Duration) {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for p.Pending() > 0 {
		select {
		case <-tick.C:
		case <-deadline.C:
			return
		}
	}
}

// close releases what newApp opened; listeners already closed by Shutdown
// are closed again harmlessly.
func (a *app) close() {
	for _, ln := range []net.Listener{a.tlsLn, a.startTLSLn, a.adminLn, a.eventsLn} {
		if ln != nil {
			ln.Close()
		}
	}
	if a.store != nil {
		if err := a.store.Close(); err != nil {
			a.log.Error("closing the store", "err", err)
		}
		a.store = nil
	}
	if a.lock != nil {
		if err := a.lock.Close(); err != nil {
			a.log.Error("releasing the store lock", "err", err)
		}
		a.lock = nil
	}
}
