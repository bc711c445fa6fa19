package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"os"
	"os/user"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/xapsproxy/xapsproxy/internal/dovecotrun"
)

// sourcesSettings are the knobs of `xapsbench sources`.
type sourcesSettings struct {
	quick          bool
	accounts       int
	deliveries     int // per mailbox and source
	rate           float64
	pollInterval   time.Duration
	hookDeliveries int
	memNotify      int
	memIdle        int
	memEvents      int
	settle         time.Duration
	afterGC        bool
	timeout        time.Duration
	sources        []string
	dovecotUser    string
	inotify        int
	xapsproxyEnv   string
}

// sourceKinds are the event sources measured, in order.
var sourceKinds = []sourceKind{
	{name: "dovecot", source: "dovecot", events: true,
		what: "Dovecot's own events: contrib/dovecot/xapsproxy.lua posting to xapsproxy's [events] listener"},
	{name: "notify", source: "notify", what: "one NOTIFY connection per account (internal/imapnotify)"},
	{name: "idle", source: "idle", what: "one IDLE connection per account on INBOX, Notes polled every watch.poll_interval"},
	{name: "idle-hibernate", source: "idle", hibernate: true,
		what: "as idle, with Dovecot's imap_hibernate_timeout = 1s"},
}

// sourceKind is one way of learning of new mail.
type sourceKind struct {
	name      string
	source    string // watch.source
	events    bool   // Dovecot posts its events; no connection per account
	hibernate bool   // imap_hibernate_timeout = 1s
	what      string
}

func (k sourceKind) idle() bool { return k.source == "idle" }

// kindNamed returns the source kind called name, and whether there is one.
func kindNamed(name string) (sourceKind, bool) {
	i := slices.IndexFunc(sourceKinds, func(k sourceKind) bool { return k.name == name })
	if i < 0 {
		return sourceKind{}, false
	}
	return sourceKinds[i], true
}

func parseSourcesSettings(args []string, stderr io.Writer) (sourcesSettings, error) {
	fs := flag.NewFlagSet("xapsbench sources", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var s sourcesSettings
	var sources string
	fs.BoolVar(&s.quick, "quick", false, "smoke test: 10 accounts, 3 deliveries per mailbox, 2s poll interval, small memory runs")
	fs.IntVar(&s.accounts, "accounts", 0, "accounts per source, each a Dovecot user with one device (INBOX and Notes) (default 1000, quick 10)")
	fs.IntVar(&s.deliveries, "deliveries", 0, "measured deliveries per mailbox (INBOX, Notes) and source, each to another account (default 200, quick 3)")
	fs.Float64Var(&s.rate, "rate", 20, "deliveries a second (the IDLE sources spread theirs over one poll interval instead)")
	fs.DurationVar(&s.pollInterval, "poll-interval", 0, "xapsproxy's watch.poll_interval for the IDLE sources (default 1m, quick 2s; xapsproxy's own default is 2m)")
	fs.IntVar(&s.hookDeliveries, "hook-deliveries", 0, "deliveries with Dovecot's events hook on and as many with it off (default 300, quick 10)")
	fs.IntVar(&s.memNotify, "mem-notify", -1, "watched accounts of the NOTIFY memory run, 0 for none (default 10000, quick 100)")
	fs.IntVar(&s.memIdle, "mem-idle", -1, "watched accounts of the IDLE memory run, 0 for none (default 10000, quick 100)")
	fs.IntVar(&s.memEvents, "mem-events", -1, "registered accounts of the Dovecot events memory run, 0 for none (default 100000, quick 1000)")
	noMemory := fs.Bool("no-memory", false, "leave the memory runs at scale out")
	fs.BoolVar(&s.afterGC, "after-gc", false, "in the memory runs, also measure after xapsproxy's next garbage collection (the Go runtime forces one after 2 minutes without: up to that much longer per run)")
	fs.DurationVar(&s.settle, "settle", 0, "longest wait for an RSS to settle (default 10s, quick 500ms)")
	fs.DurationVar(&s.timeout, "timeout", 0, "longest wait for every account to be watched (default 5m, quick 1m)")
	fs.StringVar(&sources, "sources", "dovecot,notify,idle,idle-hibernate", `the sources to measure against Dovecot, in order ("none": the memory runs only)`)
	fs.StringVar(&s.dovecotUser, "dovecot-user", "dovecot", "the account Dovecot runs as (when run as root): per-user limits such as inotify instances count per account, so another account than the tests' nobody keeps the runs apart")
	fs.IntVar(&s.inotify, "inotify-instances", 0, "set fs.inotify.max_user_instances to this for the run, and back afterwards (0: leave it alone)")
	fs.StringVar(&s.xapsproxyEnv, "xapsproxy-env", "", `extra environment for the xapsproxy processes only, e.g. "GOGC=50"`)
	if err := fs.Parse(args); err != nil {
		return s, err
	}
	if fs.NArg() > 0 {
		return s, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	def := func(v *int, full, quick int) {
		if *v == 0 {
			*v = map[bool]int{false: full, true: quick}[s.quick]
		}
	}
	defDur := func(v *time.Duration, full, quick time.Duration) {
		if *v == 0 {
			*v = map[bool]time.Duration{false: full, true: quick}[s.quick]
		}
	}
	def(&s.accounts, 1000, 10)
	def(&s.deliveries, 200, 3)
	def(&s.hookDeliveries, 300, 10)
	for _, m := range []struct {
		v           *int
		full, quick int
	}{{&s.memNotify, 10000, 100}, {&s.memIdle, 10000, 100}, {&s.memEvents, 100000, 1000}} {
		if *m.v < 0 {
			*m.v = map[bool]int{false: m.full, true: m.quick}[s.quick]
		}
	}
	defDur(&s.pollInterval, time.Minute, 2*time.Second)
	defDur(&s.settle, 10*time.Second, 500*time.Millisecond)
	defDur(&s.timeout, 5*time.Minute, time.Minute)
	if *noMemory {
		s.memNotify, s.memIdle, s.memEvents = 0, 0, 0
	}
	for name := range strings.SplitSeq(sources, ",") {
		if name == "none" {
			continue
		}
		if _, ok := kindNamed(name); !ok {
			return s, fmt.Errorf("-sources: unknown source %q (want dovecot, notify, idle, idle-hibernate)", name)
		}
		s.sources = append(s.sources, name)
	}
	switch {
	case s.accounts < 1 || s.deliveries < 1 || s.hookDeliveries < 1 || s.rate <= 0:
		return s, fmt.Errorf("-accounts, -deliveries, -hook-deliveries and -rate must be positive")
	case 2*s.deliveries > s.accounts:
		return s, fmt.Errorf("-deliveries %d: each delivery goes to an account of its own, so 2 x deliveries (INBOX and Notes) must not exceed -accounts %d", s.deliveries, s.accounts)
	case s.pollInterval < time.Second:
		return s, fmt.Errorf("-poll-interval: xapsproxy takes no less than 1s")
	case s.inotify < 0:
		return s, fmt.Errorf("-inotify-instances must not be negative")
	}
	return s, nil
}

// sourcesBench is what the source runs share.
type sourcesBench struct {
	s         sourcesSettings
	env       *environment
	dir       string
	xb        *xapsproxyBuild
	clientTLS *tls.Config
	progress  io.Writer
}

// sourcesResults is everything `sources` measured.
type sourcesResults struct {
	runs         []*sourceRun
	hook         *hookResult
	memory       []memRun
	inotifyLimit int // fs.inotify.max_user_instances during the runs
	inotifyWas   int // before the run, when -inotify-instances changed it
	dovecotUser  string
	took         time.Duration
}

// sourcesCmd measures, for each event source, how fast a delivery becomes
// an APNs request and what watching every account costs Dovecot and
// xapsproxy; then xapsproxy's memory per account at scale.
func sourcesCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	began := time.Now()
	s, err := parseSourcesSettings(args, stderr)
	if err != nil {
		return err
	}
	progress := prefixWriter{w: stderr}
	env := &environment{command: commandLine(append([]string{"sources"}, args...)), cpus: runtime.NumCPU(),
		cpuModel: cpuModel(), kernel: kernel(), goEnv: goEnv(), nginx: "not used", proxyEnv: s.xapsproxyEnv}
	// Per account: the proxy's connection, and Dovecot's imap process with
	// its socket, log pipe and service connections; the memory runs hold
	// both ends of each fake connection, one in each process.
	if env.fileLimit, err = raiseFileLimit(uint64(8*max(s.accounts, s.memNotify, s.memIdle) + 4096)); err != nil {
		return err
	}
	if need := uint64(max(s.accounts, s.memNotify, s.memIdle) + 1024); env.fileLimit < need {
		return fmt.Errorf("RLIMIT_NOFILE is %d, %d connections need about %d: raise it (ulimit -n) or lower -accounts, -mem-notify, -mem-idle",
			env.fileLimit, max(s.accounts, s.memNotify, s.memIdle), need)
	}
	res := &sourcesResults{}
	if res.inotifyLimit, err = inotifyLimit(); err != nil {
		return err
	}
	if s.inotify > 0 && s.inotify != res.inotifyLimit {
		if err := setInotifyLimit(s.inotify); err != nil {
			return err
		}
		res.inotifyWas = res.inotifyLimit
		res.inotifyLimit = s.inotify
		defer setInotifyLimit(res.inotifyWas)
		fmt.Fprintf(progress, "fs.inotify.max_user_instances set to %d (was %d) for the run, as -inotify-instances asks\n", s.inotify, res.inotifyWas)
	}
	if os.Geteuid() == 0 {
		if _, err := user.Lookup(s.dovecotUser); err != nil {
			return fmt.Errorf("-dovecot-user %s: %w (Debian's dovecot-core creates the account dovecot; -dovecot-user nobody uses the tests' account)", s.dovecotUser, err)
		}
		res.dovecotUser = s.dovecotUser
	}
	dir, err := prepare(env)
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	fmt.Fprintf(progress, "certificates, go build ./cmd/xapsproxy\n")
	p, err := newPKI(dir)
	if err != nil {
		return err
	}
	pool, err := p.pool()
	if err != nil {
		return err
	}
	xb, err := newXapsproxyBuild(ctx, env, dir, p, s.xapsproxyEnv)
	if err != nil {
		return err
	}
	sb := &sourcesBench{s: s, env: env, dir: dir, xb: xb, progress: progress,
		clientTLS: &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool, ServerName: "localhost"}}
	for i, name := range s.sources {
		k, _ := kindNamed(name)
		fmt.Fprintf(progress, "source %d/%d: %s, %d accounts\n", i+1, len(s.sources), k.name, s.accounts)
		run, hook, err := sb.runSource(ctx, k, i)
		if err != nil {
			return fmt.Errorf("source %s: %w", k.name, err)
		}
		res.runs = append(res.runs, run)
		if hook != nil {
			res.hook = hook
		}
	}
	if res.memory, err = sb.memoryRuns(ctx); err != nil {
		return err
	}
	res.took = time.Since(began)
	rep := &report{w: stdout}
	printSources(rep, env, s, res)
	if rep.err != nil {
		return rep.err
	}
	if n := res.errors(); n > 0 {
		return fmt.Errorf("%d error(s), listed in the report above", n)
	}
	return nil
}

// sourceUsers are the Dovecot users of a source run: sourceUser(i) for i
// in 1..n, with their passwords.
func sourceUsers(n int) map[string]string {
	users := make(map[string]string, n)
	for i := 1; i <= n; i++ {
		users[reconnectUser(i)] = "pw-" + reconnectUser(i)
	}
	return users
}

// sourceDevice is the device of account i in the run numbered run: its
// token says both, so that a push from one run is never taken for one of
// another.
func sourceDevice(run, i int) device {
	return device{user: reconnectUser(i), password: "pw-" + reconnectUser(i),
		token: fmt.Sprintf("%02x%062x", run, i), accountID: fmt.Sprintf("BENCH-%02d-%06d", run, i),
		mailboxes: []string{"INBOX", "Notes"}}
}

// dovecotSourceConfig is the Dovecot configuration of a source run on top
// of the template: limits for n sessions, Notes in every account, and LMTP
// delivering user+Notes@... to Notes.
func dovecotSourceConfig(n int) string {
	return dovecotLimits(n, 0) + `lmtp_save_to_detail_mailbox = yes
namespace inbox {
  mailbox Notes {
    auto = create
  }
}
`
}

// startDovecot starts the Dovecot of a source run, as -dovecot-user.
func (sb *sourcesBench) startDovecot(users map[string]string, hibernate bool, extra string) (*dovecotrun.Instance, error) {
	dc, err := dovecotrun.Start(dovecotrun.Options{Users: users, Hibernate: hibernate, ExtraConfig: extra, RunAs: sb.s.dovecotUser})
	if err != nil {
		return nil, fmt.Errorf("dovecot: %w", err)
	}
	return dc, nil
}
