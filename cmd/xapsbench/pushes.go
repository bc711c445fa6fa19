package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xapsproxy/xapsproxy/config"
	"github.com/xapsproxy/xapsproxy/push"
	"github.com/xapsproxy/xapsproxy/store"
)

// pushesSettings are the knobs of `xapsbench pushes`.
type pushesSettings struct {
	quick       bool
	devices     int
	delays      []time.Duration
	staged      []time.Duration
	outage      time.Duration
	concurrency int
	connections int
	committers  int
	registrars  int
	streams     int
	warmup      int
	timeout     time.Duration
	storeDir    string
	cpuProfile  string
	memProfile  string
	logLevel    string
}

func parsePushesSettings(args []string, stderr io.Writer) (pushesSettings, error) {
	fs := flag.NewFlagSet("xapsbench pushes", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var s pushesSettings
	var delays, staged string
	fs.BoolVar(&s.quick, "quick", false, "smoke test: 5000 devices, a 5 s outage")
	fs.IntVar(&s.devices, "devices", 0, "registered devices, each its own user and account (default 100000, quick 5000)")
	fs.StringVar(&delays, "delays", "0,50ms", "the fake APNs's answer delay of each burst, comma separated")
	fs.StringVar(&staged, "staged", "0", "delays (of -delays) with a second, staged burst: every event committed first, then all notified at once")
	fs.DurationVar(&s.outage, "outage", 0, "how long the fake APNs answers 500 in the outage run, 0 for no outage run (default 60s, quick 5s)")
	fs.IntVar(&s.concurrency, "concurrency", 500, "pushes in flight at once ([apns] concurrency, push.Options.MaxConcurrent)")
	fs.IntVar(&s.connections, "connections", 2, "HTTP/2 connections to APNs ([apns] connections)")
	fs.IntVar(&s.committers, "committers", 16, "goroutines committing the events (CommitMailbox, then Notify), as account owners do")
	fs.IntVar(&s.registrars, "registrars", 16, "goroutines storing the registrations")
	fs.IntVar(&s.streams, "streams", 1000, "the fake APNs's HTTP/2 MAX_CONCURRENT_STREAMS per connection")
	fs.IntVar(&s.warmup, "warmup", 1000, "pushes sent before the first measured run (connections opened, store warmed), not measured")
	fs.DurationVar(&s.timeout, "timeout", 6*time.Minute, "longest wait for a run's pushes (after the outage: from the recovery)")
	fs.StringVar(&s.storeDir, "store-dir", "", `directory for the SQLite store (default: the run's temporary directory; "/dev/shm" for tmpfs)`)
	fs.StringVar(&s.cpuProfile, "cpuprofile", "", "write a CPU profile of the measured runs to FILE, and of the fake APNs to FILE.fake-apns")
	fs.StringVar(&s.memProfile, "memprofile", "", "write a heap profile of this process to FILE after the last run (after a GC)")
	fs.StringVar(&s.logLevel, "log", "", `also print the push stage's log to stderr from this level ("debug", "info", "warn", "error"); warnings and errors are counted in the report either way`)
	if err := fs.Parse(args); err != nil {
		return s, err
	}
	if fs.NArg() > 0 {
		return s, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if s.devices == 0 {
		s.devices = map[bool]int{false: 100000, true: 5000}[s.quick]
	}
	if s.outage == 0 && !flagSet(fs, "outage") {
		s.outage = map[bool]time.Duration{false: 60 * time.Second, true: 5 * time.Second}[s.quick]
	}
	var err error
	if s.delays, err = parseDelays("-delays", delays); err != nil {
		return s, err
	}
	if s.staged, err = parseDelays("-staged", staged); err != nil {
		return s, err
	}
	if s.logLevel != "" {
		var l slog.Level
		if err := l.UnmarshalText([]byte(s.logLevel)); err != nil {
			return s, fmt.Errorf("-log %q: %w", s.logLevel, err)
		}
	}
	if s.connections > config.MaxAPNsConnections {
		return s, fmt.Errorf("-connections %d: at most %d", s.connections, config.MaxAPNsConnections)
	}
	if s.devices < 1 || s.devices > 1<<31-1 || s.concurrency < 1 || s.connections < 1 || s.committers < 1 || s.registrars < 1 ||
		s.streams < 1 || s.warmup < 0 || s.timeout <= 0 || s.outage < 0 {
		return s, errors.New("-devices, -concurrency, -connections, -committers, -registrars, -streams and -timeout must be positive, -warmup and -outage not negative")
	}
	if len(s.delays) == 0 && s.outage == 0 {
		return s, errors.New("nothing to measure: no -delays and no -outage")
	}
	return s, nil
}

// parseDelays parses a comma-separated list of durations >= 0.
func parseDelays(name, list string) ([]time.Duration, error) {
	var ds []time.Duration
	for _, f := range strings.Split(list, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		d, err := time.ParseDuration(f)
		if err != nil || d < 0 {
			return nil, fmt.Errorf("%s %q: %q is not a duration >= 0", name, list, f)
		}
		ds = append(ds, d)
	}
	return ds, nil
}

func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// pushesAPNSConfig is the [apns] section the push stage runs with: the
// bench's APNs certificate, the fake APNs and the bench's CA, concurrency
// pushes in flight over connections HTTP/2 connections.
func pushesAPNSConfig(p *pki, url string, concurrency, connections int) config.APNS {
	return config.APNS{CertificateFile: p.apnsPEM, Endpoint: url, CAFile: p.caFile, MailboxHash: true,
		Concurrency: concurrency, Connections: connections}
}

// pushesBench is one `xapsbench pushes` run: the store, the push stage of
// this process and the fake APNs child.
type pushesBench struct {
	s        pushesSettings
	progress io.Writer
	st       *store.SQLite
	pusher   *push.Pusher
	fake     *fakeAPNsProc
	log      *countingHandler
	commitAt []int64 // unix nanos of each device's latest event commit (staged: its Notify)
	ids      []int64 // staged: each device's outbox entry, to be notified
	uidNext  uint32  // of the next burst
}

// pushesCmd measures the push stage at scale: bursts of one new mail for
// every registered device against a fake APNs with each answer delay, then
// an outage of the fake APNs and the recovery.
func pushesCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	s, err := parsePushesSettings(args, stderr)
	if err != nil {
		return err
	}
	began := time.Now()
	progress := prefixWriter{w: stderr}
	env := &environment{command: commandLine(append([]string{"pushes"}, args...)), cpus: runtime.NumCPU(), cpuModel: cpuModel(),
		kernel: kernel(), goEnv: goEnv(), goVersion: runtime.Version(), dovecot: "not used", nginx: "not used"}
	env.dir, _ = os.Getwd()
	// The store's connections, the fake APNs's connections and pipes.
	if env.fileLimit, err = raiseFileLimit(4096); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "xapsbench")
	if err != nil {
		return fmt.Errorf("temporary directory: %w", err)
	}
	defer os.RemoveAll(dir)
	p, err := newPKI(dir)
	if err != nil {
		return err
	}
	res := &pushesResults{env: env, s: s}
	storeDir := dir
	if s.storeDir != "" {
		if storeDir, err = os.MkdirTemp(s.storeDir, "xapsbench"); err != nil {
			return fmt.Errorf("store directory: %w", err)
		}
		defer os.RemoveAll(storeDir)
	}
	res.storePath = filepath.Join(storeDir, "xapsproxy.db")
	res.storeFS = fsType(storeDir)

	fakeProfile := ""
	if s.cpuProfile != "" {
		fakeProfile = s.cpuProfile + ".fake-apns"
	}
	fake, err := startFakeAPNsProc(p, s.streams, fakeProfile)
	if err != nil {
		return err
	}
	defer fake.close()
	res.fakePid = fake.pid()
	if err := fake.do(fmt.Sprintf("devices %d", s.devices)); err != nil {
		return err
	}

	st, err := store.Open(ctx, res.storePath)
	if err != nil {
		return err
	}
	defer st.Close()
	fmt.Fprintf(progress, "pushes: storing %d registrations (%s, %d goroutines)\n", s.devices, res.storeFS, s.registrars)
	start := time.Now()
	if err := registerPushDevices(ctx, st, s.devices, s.registrars); err != nil {
		return err
	}
	res.load = time.Since(start)
	fmt.Fprintf(progress, "pushes: stored in %.1f s\n", res.load.Seconds())

	cfg := pushesAPNSConfig(p, fake.url, s.concurrency, s.connections)
	creds, err := push.LoadCredentials(cfg, time.Now())
	if err != nil {
		return fmt.Errorf("APNs credentials: %w", err)
	}
	sender, err := push.NewAPNs(creds, cfg)
	if err != nil {
		return err
	}
	defer sender.Close()
	logs := newCountingHandler(s.logLevel, stderr)
	pusher := push.New(push.Options{Store: st, Sender: sender, Logger: slog.New(logs), Topic: creds.Topic, MaxConcurrent: cfg.Concurrency})
	runCtx, stopRun := context.WithCancel(ctx)
	runErr := make(chan error, 1)
	go func() { runErr <- pusher.Run(runCtx) }()
	defer func() {
		stopRun()
		<-runErr
	}()

	b := &pushesBench{s: s, progress: progress, st: st, pusher: pusher, fake: fake, log: logs,
		commitAt: make([]int64, s.devices), ids: make([]int64, s.devices), uidNext: 2}
	if err := b.warm(ctx, res); err != nil {
		return err
	}
	if s.cpuProfile != "" {
		f, err := os.Create(s.cpuProfile)
		if err != nil {
			return fmt.Errorf("cpu profile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("cpu profile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	if err := b.waitWorkersGone(ctx); err != nil {
		return err
	}
	res.baseline = settledMem()
	type plan struct {
		delay  time.Duration
		staged bool
	}
	var plans []plan
	for _, d := range s.delays {
		plans = append(plans, plan{d, false})
		if slices.Contains(s.staged, d) {
			plans = append(plans, plan{d, true})
		}
	}
	for _, pl := range plans {
		how := map[bool]string{false: "", true: " (staged: committed first, then notified at once)"}[pl.staged]
		fmt.Fprintf(progress, "pushes: burst of %d events%s, fake APNs answering after %v\n", s.devices, how, pl.delay)
		r, err := b.burst(ctx, pl.delay, 0, pl.staged)
		if err != nil {
			return err
		}
		res.runs = append(res.runs, r)
		fmt.Fprintf(progress, "pushes: %.0f pushes/s, events committed at %.0f/s, p99 %.1f ms\n", r.throughput(), r.injectRate(), ms(r.latency.p99))
	}
	if s.outage > 0 {
		fmt.Fprintf(progress, "pushes: outage run: the fake APNs answers 500 for %v, with a burst of %d events in it\n", s.outage, s.devices)
		r, err := b.burst(ctx, 0, s.outage, false)
		if err != nil {
			return err
		}
		res.runs = append(res.runs, r)
		fmt.Fprintf(progress, "pushes: backlog drained %.2f s after the recovery\n", r.drained().Seconds())
	}
	if s.memProfile != "" {
		if err := writeHeapProfile(s.memProfile); err != nil {
			return err
		}
	}
	res.took = time.Since(began)
	r := &report{w: stdout}
	printPushes(r, res)
	if r.err != nil {
		return r.err
	}
	if n := res.errors(); n > 0 {
		return fmt.Errorf("pushes: %d device(s) without exactly one push, or malformed or unknown requests; see the report", n)
	}
	return nil
}

// registerPushDevices stores n registrations as iPhone Mail makes them,
// from workers goroutines.
func registerPushDevices(ctx context.Context, st store.Store, n, workers int) error {
	now := time.Now()
	var next atomic.Int64
	var failed atomic.Pointer[error]
	var wg sync.WaitGroup
	for range min(workers, n) {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < n && failed.Load() == nil && ctx.Err() == nil; i = int(next.Add(1) - 1) {
				reg := store.Registration{User: pushesUser(i), DeviceToken: pushesToken(i), AccountID: pushesAccountID(i),
					Subtopic: "com.apple.mobilemail", Mailboxes: []string{"INBOX"}, Version: 2, Topic: apnsTopic,
					Registered: now, Renewed: now}
				if err := st.Register(ctx, reg); err != nil {
					err = fmt.Errorf("registration %d: %w", i, err)
					failed.CompareAndSwap(nil, &err)
				}
			}
		})
	}
	wg.Wait()
	if err := failed.Load(); err != nil {
		return *err
	}
	return ctx.Err()
}

// warm sends the warm-up pushes through the whole stage, so that the
// measured runs find the connections open, then resets the fake's records.
func (b *pushesBench) warm(ctx context.Context, res *pushesResults) error {
	n := min(b.s.warmup, b.s.devices)
	res.warmup = n
	if n == 0 {
		return nil
	}
	fmt.Fprintf(b.progress, "pushes: %d warm-up pushes\n", n)
	if _, _, err := b.inject(ctx, n, true); err != nil {
		return err
	}
	if _, err := b.waitIdle(ctx, time.Now().Add(b.s.timeout)); err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}
	s, err := b.fake.summary()
	if err != nil {
		return err
	}
	if s.DevicesOK != int64(n) {
		return fmt.Errorf("warm-up: %d of %d devices got a push (%+v)", s.DevicesOK, n, s)
	}
	b.log.take()
	res.warmConns = s.Conns
	return b.fake.do("reset")
}

// writeHeapProfile writes the live heap, after a collection, to path.
func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("heap profile: %w", err)
	}
	defer f.Close()
	runtime.GC()
	if err := pprof.WriteHeapProfile(f); err != nil {
		return fmt.Errorf("heap profile: %w", err)
	}
	return f.Close()
}

// fsType names the file system dir is on, as far as the bench knows them.
func fsType(dir string) string {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return "unknown file system"
	}
	switch st.Type {
	case unix.TMPFS_MAGIC:
		return "tmpfs"
	case unix.EXT4_SUPER_MAGIC:
		return "ext4"
	case unix.XFS_SUPER_MAGIC:
		return "xfs"
	case unix.BTRFS_SUPER_MAGIC:
		return "btrfs"
	case unix.OVERLAYFS_SUPER_MAGIC:
		return "overlayfs"
	}
	return fmt.Sprintf("file system type %#x", st.Type)
}

// countingHandler is the push stage's slog handler: it counts warnings
// and errors by message (the report lists them per run) and, with -log,
// prints records from that level on to stderr.
type countingHandler struct {
	min    slog.Level
	next   slog.Handler // nil without -log
	counts *logCounts   // shared by With's copies
}

// logCounts is records by "LEVEL message".
type logCounts struct {
	mu sync.Mutex
	n  map[string]int
}

func newCountingHandler(level string, w io.Writer) *countingHandler {
	h := &countingHandler{min: slog.LevelWarn, counts: &logCounts{n: map[string]int{}}}
	if level != "" {
		var l slog.Level
		l.UnmarshalText([]byte(level)) // checked by parsePushesSettings
		h.next = slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})
		h.min = min(h.min, l)
	}
	return h
}

func (h *countingHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.min }

func (h *countingHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn {
		h.counts.mu.Lock()
		h.counts.n[r.Level.String()+" "+r.Message]++
		h.counts.mu.Unlock()
	}
	if h.next != nil && h.next.Enabled(ctx, r.Level) {
		return h.next.Handle(ctx, r)
	}
	return nil
}

func (h *countingHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	if h.next == nil {
		return h
	}
	c := *h
	c.next = h.next.WithAttrs(attrs)
	return &c
}

func (h *countingHandler) WithGroup(name string) slog.Handler {
	if h.next == nil {
		return h
	}
	c := *h
	c.next = h.next.WithGroup(name)
	return &c
}

// take returns the counts so far and starts again.
func (h *countingHandler) take() map[string]int {
	h.counts.mu.Lock()
	defer h.counts.mu.Unlock()
	c := h.counts.n
	h.counts.n = map[string]int{}
	return c
}
