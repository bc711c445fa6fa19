package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/xapsproxy/xapsproxy/internal/dovecotrun"
	"github.com/xapsproxy/xapsproxy/store"
)

// reconnectSettings are the knobs of `xapsbench reconnect`.
type reconnectSettings struct {
	accounts     int
	runs         int
	timeout      time.Duration
	loginLimit   int
	maxLogins    int
	down         time.Duration
	xapsproxyEnv string
}

func parseReconnectSettings(args []string, stderr io.Writer) (reconnectSettings, error) {
	fs := flag.NewFlagSet("xapsbench reconnect", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var s reconnectSettings
	fs.IntVar(&s.accounts, "accounts", 500, "registered accounts: Dovecot users with one device each")
	fs.IntVar(&s.runs, "runs", 5, "measured runs, each a fresh xapsproxy process: its start, then a Dovecot restart")
	fs.DurationVar(&s.timeout, "timeout", 2*time.Minute, "longest wait for every account to be watched")
	fs.IntVar(&s.loginLimit, "dovecot-login-limit", 0, "Dovecot's imap-login process_limit, which is also its IMAP listen backlog (0 = Dovecot's default, 100)")
	fs.IntVar(&s.maxLogins, "max-concurrent-logins", 0, "xapsproxy's watch.max_concurrent_logins (0 = its default)")
	fs.DurationVar(&s.down, "dovecot-down", 0, "how long Dovecot stays dead between its SIGKILL and its restart")
	fs.StringVar(&s.xapsproxyEnv, "xapsproxy-env", "", `extra environment for the xapsproxy processes only, e.g. "GOMAXPROCS=1"`)
	if err := fs.Parse(args); err != nil {
		return s, err
	}
	if fs.NArg() > 0 {
		return s, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if s.accounts < 1 || s.runs < 1 || s.timeout <= 0 || s.loginLimit < 0 || s.maxLogins < 0 || s.down < 0 {
		return s, fmt.Errorf("-accounts, -runs and -timeout must be positive, -dovecot-login-limit, -max-concurrent-logins and -dovecot-down not negative")
	}
	return s, nil
}

// reconnectUser is the name of account i (1-based), e.g. user0042.
func reconnectUser(i int) string { return fmt.Sprintf("user%04d", i) }

// dovecotLimits is the Dovecot configuration that n watched accounts need
// on top of the template: one imap process per session (imap_hibernate is
// off), and that many clients of the services every imap process talks to
// (log, anvil, stats). The login service keeps Dovecot's default limits
// unless loginLimit is set: its process_limit of 100 is also the listen
// backlog of the IMAP port, the queue that overflows when too many
// connections arrive at once.
func dovecotLimits(n, loginLimit int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "default_client_limit = %d\n", max(1000, 2*n+200))
	fmt.Fprintf(&b, "service imap {\n  process_limit = %d\n}\n", max(1024, n+100))
	if loginLimit > 0 {
		fmt.Fprintf(&b, "service imap-login {\n  process_limit = %d\n}\n", loginLimit)
	}
	return b.String()
}

// reconnectPhase is one measured wait for every account to be watched.
type reconnectPhase struct {
	took             time.Duration // to every account watched
	greetingTimeouts float64       // during the phase
	reconnects       float64       // during the phase
	sessions         int           // Dovecot's IMAP sessions afterwards (doveadm who)
	cpu              time.Duration // xapsproxy's CPU time during the phase
}

// reconnectRun is one fresh xapsproxy: its start with every account
// stored, then a Dovecot SIGKILL and restart.
type reconnectRun struct {
	start, restart reconnectPhase
	dovecotRestart time.Duration // SIGKILL to Dovecot's listeners answering again
}

// reconnectCmd measures how long xapsproxy takes to watch every registered
// account: at its start, and after Dovecot was SIGKILLed and restarted.
func reconnectCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	s, err := parseReconnectSettings(args, stderr)
	if err != nil {
		return err
	}
	progress := prefixWriter{w: stderr}
	env := &environment{command: commandLine(append([]string{"reconnect"}, args...)), cpus: runtime.NumCPU(),
		cpuModel: cpuModel(), kernel: kernel(), goEnv: goEnv(), nginx: "not used", proxyEnv: s.xapsproxyEnv}
	// Per account: the proxy's connection, and Dovecot's imap process with
	// its socket, log pipe and service connections.
	if env.fileLimit, err = raiseFileLimit(uint64(8*s.accounts + 4096)); err != nil {
		return err
	}
	dir, err := prepare(env)
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	fmt.Fprintf(progress, "certificates, Dovecot with %d users, go build ./cmd/xapsproxy\n", s.accounts)
	p, err := newPKI(dir)
	if err != nil {
		return err
	}
	users := make(map[string]string, s.accounts)
	for i := 1; i <= s.accounts; i++ {
		users[reconnectUser(i)] = "pw-" + reconnectUser(i)
	}
	dc, err := dovecotrun.Start(dovecotrun.Options{Users: users, ExtraConfig: dovecotLimits(s.accounts, s.loginLimit)})
	if err != nil {
		return fmt.Errorf("dovecot: %w", err)
	}
	defer dc.Close()
	xb, err := newXapsproxyBuild(ctx, env, dir, p, s.xapsproxyEnv)
	if err != nil {
		return err
	}
	r := &reconnectBench{s: s, dc: dc, xb: xb, progress: progress}
	if err := r.register(ctx); err != nil {
		return err
	}

	// The first start creates every maildir and stores every baseline:
	// reported, but not one of the runs.
	fmt.Fprintf(progress, "warm-up: xapsproxy start with %d stored accounts (Dovecot creates their maildirs)\n", s.accounts)
	warmup, err := r.run(ctx, false)
	if err != nil {
		return err
	}
	var runs []reconnectRun
	for i := 1; i <= s.runs; i++ {
		fmt.Fprintf(progress, "run %d/%d: xapsproxy start, then Dovecot SIGKILLed and restarted\n", i, s.runs)
		run, err := r.run(ctx, true)
		if err != nil {
			return err
		}
		fmt.Fprintf(progress, "  start %s (%.0f greeting timeouts), restart %s (%.0f)\n", seconds(run.start.took),
			run.start.greetingTimeouts, seconds(run.restart.took), run.restart.greetingTimeouts)
		runs = append(runs, run)
	}
	rep := &report{w: stdout}
	printReconnect(rep, env, s, dc.Log(), warmup, runs)
	return rep.err
}

// reconnectBench is the setup shared by the runs.
type reconnectBench struct {
	s        reconnectSettings
	dc       *dovecotrun.Instance
	xb       *xapsproxyBuild
	progress io.Writer
}

const reconnectInstance = "xapsproxy-reconnect"

// register stores one device registration per account, as the proxy would
// have stored them, in the database every run's xapsproxy opens.
func (r *reconnectBench) register(ctx context.Context) error {
	st, err := store.Open(ctx, r.xb.storePath(reconnectInstance))
	if err != nil {
		return err
	}
	defer st.Close()
	now := time.Now()
	for i := 1; i <= r.s.accounts; i++ {
		reg := store.Registration{
			User: reconnectUser(i), DeviceToken: fmt.Sprintf("%064x", i), AccountID: fmt.Sprintf("ACCOUNT-%d", i),
			Subtopic: "com.apple.mobilemail", Mailboxes: []string{"INBOX"}, Version: 2,
			Topic: apnsTopic, Registered: now, Renewed: now,
		}
		if err := st.Register(ctx, reg); err != nil {
			return fmt.Errorf("registration %d: %w", i, err)
		}
	}
	return nil
}

// run starts xapsproxy and waits until it watches every account; with
// restart, it then SIGKILLs Dovecot, restarts it and waits again. It stops
// xapsproxy and waits for Dovecot to have no session left before returning.
func (r *reconnectBench) run(ctx context.Context, restart bool) (reconnectRun, error) {
	var res reconnectRun
	start := time.Now()
	inst := instance{backend: r.dc.IMAPAddr, admin: true}
	if r.s.maxLogins > 0 {
		inst.watch = append(inst.watch, fmt.Sprintf("max_concurrent_logins = %d", r.s.maxLogins))
	}
	x, err := r.xb.start(ctx, reconnectInstance, inst)
	if err != nil {
		return res, err
	}
	defer x.stop() // on errors; stopping again does nothing
	m, err := r.waitWatched(ctx, x, start, watched{})
	if err != nil {
		return res, err
	}
	res.start = m.phase
	if !restart {
		return res, r.stopAndSettle(ctx, x)
	}

	killed := time.Now()
	r.dc.Kill()
	if err := sleep(ctx, r.s.down); err != nil {
		return res, err
	}
	if err := r.dc.Restart(); err != nil {
		return res, fmt.Errorf("dovecot: %w", err)
	}
	ready := time.Now()
	res.dovecotRestart = ready.Sub(killed)
	m, err = r.waitWatched(ctx, x, ready, m)
	if err != nil {
		return res, err
	}
	res.restart = m.phase
	return res, r.stopAndSettle(ctx, x)
}

// watched is what waitWatched saw: the phase, and the metrics and
// xapsproxy's CPU time at its end.
type watched struct {
	phase  reconnectPhase
	values metrics
	cpu    time.Duration
}

// waitWatched polls x's /metrics until every account is watched, and
// returns the time since since and the counters' growth since before.
func (r *reconnectBench) waitWatched(ctx context.Context, x *proxyProc, since time.Time, before watched) (watched, error) {
	url := "http://" + x.admin + "/metrics"
	want := float64(r.s.accounts)
	deadline := since.Add(r.s.timeout)
	var m metrics
	for {
		var err error
		if m, err = scrapeMetrics(ctx, url); err != nil {
			return watched{}, err
		}
		if m[metricWatching] == want {
			break
		}
		if time.Now().After(deadline) {
			return watched{}, fmt.Errorf("%v after the start of the phase, %v of %d accounts are watched; xapsproxy's log ends:\n%s",
				r.s.timeout, m[metricWatching], r.s.accounts, x.out.String())
		}
		if err := sleep(ctx, metricsPoll); err != nil {
			return watched{}, err
		}
	}
	took := time.Since(since)
	cpu, err := cpuTime(x.pid())
	if err != nil {
		return watched{}, err
	}
	ph := reconnectPhase{
		took:             took,
		greetingTimeouts: m[metricGreetingTimeouts] - before.values[metricGreetingTimeouts],
		reconnects:       m[metricReconnects] - before.values[metricReconnects],
		cpu:              cpu - before.cpu,
	}
	if ph.sessions, err = sessions(r.dc); err != nil {
		return watched{}, err
	}
	return watched{phase: ph, values: m, cpu: cpu}, nil
}

// stopAndSettle stops xapsproxy and waits until Dovecot has reaped every
// session, so that the next run starts against an idle Dovecot.
func (r *reconnectBench) stopAndSettle(ctx context.Context, x *proxyProc) error {
	x.stop()
	return waitNoSessions(ctx, r.dc, 30*time.Second)
}

// sessions counts Dovecot's IMAP sessions (`doveadm who -1`: one line per
// connection).
func sessions(dc *dovecotrun.Instance) (int, error) {
	out, err := dc.Doveadm("who", "-1")
	if err != nil {
		return 0, err
	}
	n := 0
	for line := range strings.Lines(string(out)) {
		if f := strings.Fields(line); len(f) >= 2 && f[1] == "imap" {
			n++
		}
	}
	return n, nil
}
