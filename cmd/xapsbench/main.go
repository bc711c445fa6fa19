// Command xapsbench is xapsproxy's performance benchmark. It starts a real
// Dovecot, xapsproxy (built from this repository and run as its own
// process) and, when installed, nginx with its mail module in front of the
// same Dovecot, all on 127.0.0.1, and reports side by side:
//
//   - bulk FETCH throughput of a 100 MiB mailbox: direct, through xapsproxy,
//     through nginx (the proxies with the same client TLS: TLS 1.3, Go's
//     default ciphers, the client verifying a CA made for the run);
//   - NOOP and small FETCH round-trip latency, p50 and p99, and the latency
//     each proxy adds to the direct path;
//   - the RSS of the proxy process per idle, logged-in TLS connection at
//     5 000 connections (nginx's master and workers for comparison), with a
//     go-imap in-memory server as the backend so that Dovecot's limits do
//     not get in the way;
//   - push latency: the time from delivering a mail over LMTP to the APNs
//     request leaving xapsproxy (received by a fake APNs in the bench),
//     against a plain IMAP client idling directly on Dovecot;
//
// then a verdict per goal: throughput >= nginx's, added p50 latency <=
// nginx's, <= 48 KiB per idle TLS connection.
//
// Run it from the repository root (the Dovecot config template and
// ./cmd/xapsproxy are found there):
//
//	go run ./cmd/xapsbench            # full run, a few minutes on 2 cores
//	go run ./cmd/xapsbench -quick     # smoke test, well under a minute
//	go run ./cmd/xapsbench -h         # the knobs
//	go run ./cmd/xapsbench connmem    # where xapsproxy's per-connection memory goes
//	go run ./cmd/xapsbench reconnect  # how long until 500 accounts are watched again
//	go run ./cmd/xapsbench sources    # each event source: push latency, cost to Dovecot and xapsproxy
//	go run ./cmd/xapsbench pushes     # the push stage at scale: 100 000 devices, a fake APNs, an outage
//
// `reconnect` measures something else: with 500 accounts registered (-accounts),
// the time from xapsproxy's start, and from a Dovecot SIGKILL and restart, to
// every account being watched again (in IDLE, per xapsproxy's /metrics), and
// the greeting timeouts on the way; 5 runs (-runs), each reported.
//
// `sources` compares the event sources (watch.source): Dovecot's own events
// (contrib/dovecot's hook posting to [events]), NOTIFY, IDLE, and IDLE with
// Dovecot's hibernation. For each in turn it starts a Dovecot of its own with
// 1000 users (-accounts), registers one device per user through xapsproxy for
// INBOX and Notes, and once a fresh xapsproxy watches every account, delivers
// 200 mails to INBOX and 200 to Notes (-deliveries; LMTP to user+Notes@ with
// lmtp_save_to_detail_mailbox) to random accounts, timing each from the LMTP
// server's reply to the end of DATA to the APNs request at the fake APNs. It
// reports Dovecot's processes, RSS and PSS and xapsproxy's RSS and goroutines
// per account while every account is watched (against the same xapsproxy
// with no account), LMTP delivery times with the events hook on and off, and
// xapsproxy's memory per account at scale against a fake IMAP server (10 000
// NOTIFY and IDLE accounts) and with Dovecot's events (100 000 registered
// accounts, no connection each), each against a baseline with none in the
// same run; then a verdict per goal. Dovecot runs as the account dovecot
// (-dovecot-user), so that its inotify instances, of which Linux allows each
// user fs.inotify.max_user_instances (reported; Debian: 128), are its own;
// -inotify-instances N raises that limit for the run and puts it back after.
// About 9 minutes; -quick in under half a minute.
//
// Latest `sources -inotify-instances 2048 -after-gc` (2 CPUs, Go 1.26.8,
// Dovecot 2.3.19, 1000 accounts per source, 200 deliveries per mailbox; ms
// from the LMTP reply to the APNs request, p50 / p99; IDLE polls Notes every
// minute; xapsproxy's memory from the runs at scale):
//
//	source              INBOX        Notes          Dovecot PSS   xapsproxy per account
//	dovecot (events)    0.2 / 1.5    0.2 / 1.9      14 MiB        1.9 KiB, 0 goroutines (100 000 accounts)
//	notify              503 / 504    503 / 505      738 MiB       26 KiB, 1 goroutine (10 000)
//	idle                503 / 507    31 s / 60 s    767 MiB       42 KiB, 3 goroutines (10 000)
//	idle, hibernation   17 / 6850    35 s / 59 s    40 MiB        as idle
//
// The events hook adds 1.5 ms to an LMTP delivery at p50 (2.8 -> 4.3 ms).
// With the system's fs.inotify.max_user_instances (128), NOTIFY and IDLE
// push INBOX only after 11 to 13 s at p50 and no session hibernates.
// README.md's Performance section has the rest.
//
// `pushes` measures the push stage alone, in the bench's own process, with
// the product's code: a SQLite store (store.Open) holding 100 000
// registrations (-devices), the Pusher (push.New) sending through
// push.NewAPNs ([apns] concurrency 500, connections 2: -concurrency,
// -connections) to a fake APNs in a child process (HTTP/2 over TLS on
// 127.0.0.1, client certificate required), so that the push stage's CPU
// and memory are its own. A burst gives every device one new mail at once,
// as an account's owner commits it (CommitMailbox with an outbox entry,
// then Notify, from 16 goroutines, -committers), once per answer delay of
// the fake (-delays 0,50ms); a staged burst (-staged 0) commits every event
// first and then notifies them all at once, so that the push stage does not
// wait for the store. It reports pushes a second (devices / first event to
// last request answered), the events committed a second, p50/p99 from the
// event to its request at the fake, CPU, and this process's RSS and Go heap
// before, at the peak and after each run (after a GC); then an outage run:
// the fake answers 500 for 60 s (-outage) while the burst goes in, then 200,
// and every device must get exactly one 200, the backlog drained within
// 10 s. Goals: >= 10 000 pushes/s with 0 ms on 2 cores, >= 5 000/s with
// 50 ms, memory back to its baseline, exactly one push per device, the
// backlog drained <= 10 s after the recovery. About 2 minutes; -quick
// (5 000 devices, a 5 s outage) in about 20 s; -cpuprofile and -memprofile
// write profiles, -store-dir /dev/shm puts the store on tmpfs.
//
// Latest `pushes`, three runs (2 CPUs, Go 1.26.8, ext4): 0 ms: 7 669 /
// 10 832 / 9 660 pushes/s; staged 10 729 / 12 448 / 11 556; 50 ms: 6 769 /
// 8 175 / 7 114; the Go heap back within 1.7 MiB of its baseline, RSS 8 to
// 21 MiB above it; after a 60 s outage every device got exactly one push,
// the last 6.5 to 9.2 s after the recovery. README.md has the table.
//
// It needs Dovecot (apt-get install dovecot-imapd dovecot-lmtpd) and Go;
// nginx is optional (apt-get install nginx libnginx-mod-mail): without it,
// the nginx columns and the goals that compare with it are left out. Run as
// root, Dovecot's processes and nginx's workers run as nobody (those of
// `sources`, as dovecot). Everything
// lives in a temporary directory and is removed on exit, Ctrl-C included.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/xapsproxy/xapsproxy/internal/dovecotrun"
)

// The account every path logs in as (dovecotrun's and the memory backend's).
const (
	benchUser     = "alice"
	benchPassword = "alicepw"
)

// settings are the knobs of one run.
type settings struct {
	quick            bool
	messages         int
	messageSize      int
	runs             int
	ops              int
	conns            int
	memRuns          int
	warmup           int
	concurrency      int
	settle           time.Duration
	nginxWorkers     string
	nginxProxyBuffer string
	noNginx          bool
	xapsproxyEnv     string
	only             string
	pushes           int
}

func parseSettings(args []string, stderr io.Writer) (settings, error) {
	fs := flag.NewFlagSet("xapsbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var s settings
	fs.BoolVar(&s.quick, "quick", false, "smoke test: 10 MiB mailbox, 3 runs, 500 round trips, 500 connections, 10 pushes")
	fs.IntVar(&s.messages, "messages", 0, "messages in the mailbox (default 100, quick 10)")
	fs.IntVar(&s.messageSize, "message-size", 1<<20, "bytes per message")
	fs.IntVar(&s.runs, "runs", 0, "measured bulk FETCH runs per path (default 7, quick 3)")
	fs.IntVar(&s.ops, "ops", 0, "NOOPs and FETCHes per path (default 10000, quick 500)")
	fs.IntVar(&s.conns, "conns", 0, "idle connections for the memory measurement (default 5000, quick 500)")
	fs.IntVar(&s.memRuns, "mem-runs", 0, "memory measurements per proxy, each with a fresh process (default 3, quick 1)")
	fs.IntVar(&s.warmup, "warmup", 100, "connections opened before the 'before' memory sample")
	fs.IntVar(&s.concurrency, "concurrency", 50, "connections being opened at once")
	fs.DurationVar(&s.settle, "settle", 0, "longest wait for the RSS to settle (default 20s, quick 5s)")
	fs.StringVar(&s.nginxWorkers, "nginx-workers", "1", `nginx worker_processes ("1" or "auto")`)
	fs.StringVar(&s.nginxProxyBuffer, "nginx-proxy-buffer", "", `nginx proxy_buffer, e.g. "16k" ("" = nginx's default, one memory page)`)
	fs.IntVar(&s.pushes, "pushes", 0, "measured deliveries in the push phase (default 50, quick 10)")
	fs.StringVar(&s.only, "only", "", `run one part only: "bulk", "latency", "memory" or "push" ("" = all)`)
	fs.BoolVar(&s.noNginx, "no-nginx", false, "leave nginx out even if installed")
	fs.StringVar(&s.xapsproxyEnv, "xapsproxy-env", "", `extra environment for the xapsproxy processes only, e.g. "GOGC=50 GOMAXPROCS=1"`)
	if err := fs.Parse(args); err != nil {
		return s, err
	}
	switch s.only {
	case "", "bulk", "latency", "memory", "push":
	default:
		return s, fmt.Errorf("-only %q: want bulk, latency, memory or push", s.only)
	}
	if fs.NArg() > 0 {
		return s, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	def := func(v *int, full, quick int) {
		if *v == 0 {
			*v = map[bool]int{false: full, true: quick}[s.quick]
		}
	}
	def(&s.messages, 100, 10)
	def(&s.runs, 7, 3)
	def(&s.ops, 10000, 500)
	def(&s.conns, 5000, 500)
	def(&s.memRuns, 3, 1)
	def(&s.pushes, 50, 10)
	if s.settle == 0 {
		s.settle = map[bool]time.Duration{false: 20 * time.Second, true: 5 * time.Second}[s.quick]
	}
	if s.messages < 1 || s.messageSize < 1024 || s.runs < 1 || s.ops < 1 || s.conns < 1 || s.memRuns < 1 || s.pushes < 1 || s.concurrency < 1 || s.warmup < 0 {
		return s, errors.New("counts must be positive (message-size at least 1024)")
	}
	return s, nil
}

// wants reports whether part is measured in this run.
func (s settings) wants(part string) bool { return s.only == "" || s.only == part }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	var err error
	switch args := os.Args[1:]; {
	case len(args) > 0 && args[0] == "connmem":
		err = connmemCmd(ctx, args[1:], os.Stdout, os.Stderr)
	case len(args) > 0 && args[0] == "reconnect":
		err = reconnectCmd(ctx, args[1:], os.Stdout, os.Stderr)
	case len(args) > 0 && args[0] == "sources":
		err = sourcesCmd(ctx, args[1:], os.Stdout, os.Stderr)
	case len(args) > 0 && args[0] == "pushes":
		err = pushesCmd(ctx, args[1:], os.Stdout, os.Stderr)
	case len(args) > 0 && args[0] == "connmem-server": // connmem's child
		err = connmemServerCmd(args[1:], os.Stdin, os.Stdout)
	case len(args) > 0 && args[0] == fakeAPNsCommand: // pushes' child
		err = fakeAPNsCmd(args[1:], os.Stdin, os.Stdout)
	default:
		err = run(ctx, args, os.Stdout, os.Stderr)
	}
	interrupted := ctx.Err() != nil
	stop()
	switch {
	case errors.Is(err, flag.ErrHelp):
		return
	case interrupted:
		fmt.Fprintln(os.Stderr, "xapsbench: interrupted; everything started was stopped and removed")
		os.Exit(130)
	case err != nil:
		fmt.Fprintln(os.Stderr, "xapsbench:", err)
		os.Exit(1)
	}
}

// run does one whole benchmark. Everything it starts is stopped, and its
// temporary directory removed, before it returns.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	s, err := parseSettings(args, stderr)
	if err != nil {
		return err
	}
	progress := prefixWriter{w: stderr}
	env := &environment{command: commandLine(args), cpus: runtime.NumCPU(), cpuModel: cpuModel(), kernel: kernel(), goEnv: goEnv()}
	// Each connection costs the bench two descriptors (client and memory
	// backend side) and the proxy two.
	if env.fileLimit, err = raiseFileLimit(uint64(2*(s.conns+s.warmup) + 4096)); err != nil {
		return err
	}
	if need := uint64(2*(s.conns+s.warmup) + 256); env.fileLimit < need {
		return fmt.Errorf("RLIMIT_NOFILE is %d, %d connections need about %d: raise it (ulimit -n) or lower -conns", env.fileLimit, s.conns, need)
	}
	dir, err := prepare(env)
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o755); err != nil { // nginx workers run as nobody
		return fmt.Errorf("temporary directory: %w", err)
	}

	fmt.Fprintf(progress, "certificates, Dovecot, go build ./cmd/xapsproxy\n")
	p, err := newPKI(dir)
	if err != nil {
		return err
	}
	pool, err := p.pool()
	if err != nil {
		return err
	}
	clientTLS := &tls.Config{MinVersion: tls.VersionTLS13, MaxVersion: tls.VersionTLS13, RootCAs: pool, ServerName: "localhost"}
	dc, err := dovecotrun.Start(dovecotrun.Options{})
	if err != nil {
		return fmt.Errorf("dovecot: %w", err)
	}
	defer dc.Close()
	xb, err := newXapsproxyBuild(ctx, env, dir, p, s.xapsproxyEnv)
	if err != nil {
		return err
	}
	env.proxyEnv = s.xapsproxyEnv

	res := &results{env: env, settings: s}
	ngx, err := findNginx()
	switch {
	case s.noNginx:
		env.nginx, ngx = "not measured: left out with -no-nginx", nil
	case err != nil:
		env.nginx = "not measured: " + err.Error()
	case s.only == "push":
		env.nginx, ngx = "not used by -only push", nil
	default:
		env.nginx = ngx.version
	}

	b := &bench{s: s, res: res, dir: dir, xb: xb, ngx: ngx, clientTLS: clientTLS, progress: progress}
	if s.wants("bulk") || s.wants("latency") || s.wants("push") {
		if err := b.dovecotPhases(ctx, dc); err != nil {
			return err
		}
	}
	if s.wants("memory") {
		if err := b.memory(ctx); err != nil {
			return err
		}
	}
	r := &report{w: stdout}
	res.print(r)
	if r.err != nil {
		return r.err
	}
	if p := res.push; p != nil && p.errors() > 0 {
		return fmt.Errorf("push phase: %d error(s), listed in the report above", p.errors())
	}
	return nil
}

// prefixWriter writes progress lines to w.
type prefixWriter struct{ w io.Writer }

func (p prefixWriter) Write(b []byte) (int, error) {
	if _, err := fmt.Fprintf(p.w, "xapsbench: %s", b); err != nil {
		return 0, err
	}
	return len(b), nil
}

// prepare finds the module root and Dovecot's version for env, and makes the
// run's temporary directory, which the caller removes.
func prepare(env *environment) (string, error) {
	root, err := dovecotrun.ModuleRoot()
	if err != nil {
		return "", err
	}
	env.dir = root
	if env.dovecot, err = dovecotrun.Version(); err != nil {
		return "", err
	}
	dir, err := os.MkdirTemp("", "xapsbench")
	if err != nil {
		return "", fmt.Errorf("temporary directory: %w", err)
	}
	return dir, nil
}

// newXapsproxyBuild builds ./cmd/xapsproxy into dir for the run, noting the Go
// version in env; extraEnv is the environment its processes get on top.
func newXapsproxyBuild(ctx context.Context, env *environment, dir string, p *pki, extraEnv string) (*xapsproxyBuild, error) {
	bin, goVersion, err := buildXapsproxy(ctx, env.dir, dir)
	if err != nil {
		return nil, err
	}
	env.goVersion = goVersion
	return &xapsproxyBuild{bin: bin, dir: dir, pki: p, env: strings.Fields(extraEnv)}, nil
}
