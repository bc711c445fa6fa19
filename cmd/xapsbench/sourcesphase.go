package main

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/xapsproxy/xapsproxy/dovecot"
	"github.com/xapsproxy/xapsproxy/internal/dovecotrun"
)

// The xapsproxy metrics the sources benchmark reads.
const (
	metricAccounts       = "xapsproxy_accounts"
	metricNotifySessions = `xapsproxy_backend_sessions{wait="notify"}`
	metricIdleSessions   = `xapsproxy_backend_sessions{wait="idle"}`
	metricCatchUpPending = "xapsproxy_catchup_pending"
	metricCatchUpsOK     = `xapsproxy_catchups_total{result="ok"}`
	metricCatchUpsFailed = `xapsproxy_catchups_total{result="failed"}`
	metricGoroutines     = "go_goroutines"
	metricHeapInuse      = "go_memstats_heap_inuse_bytes"
	metricStackInuse     = "go_memstats_stack_inuse_bytes"
)

// catchUpRate is watch.catchup_rate in the bench: Dovecot's events source
// looks at every account once when xapsproxy starts (xapsproxy's default
// is 50 a second); the measurements start once that is over.
const catchUpRate = 5000

// registerConcurrency is how many devices register through xapsproxy at
// once.
const registerConcurrency = 8

// proxySample is one xapsproxy's memory and goroutines at one moment.
type proxySample struct {
	rss        int64 // KiB, VmRSS once settled (or when the wait ended)
	settled    bool
	goroutines float64
	heap       float64 // bytes in in-use heap spans (go_memstats_heap_inuse_bytes)
	stacks     float64 // bytes of goroutine stacks (go_memstats_stack_inuse_bytes)
}

// perAccount is the growth from base to s, per account: RSS and Go heap
// plus stacks in KiB, goroutines.
func (s proxySample) perAccount(base proxySample, n int) (rss, goHeap, goroutines float64) {
	f := float64(n)
	return float64(s.rss-base.rss) / f, (s.heap + s.stacks - base.heap - base.stacks) / 1024 / f, (s.goroutines - base.goroutines) / f
}

// sourceRun is what one source measured.
type sourceRun struct {
	kind         sourceKind
	accounts     int
	register     time.Duration // every device registered through xapsproxy
	watched      time.Duration // a fresh xapsproxy's exec to every account watched
	base, loaded proxySample   // xapsproxy with no account, with all watched
	dovecot      groupSample   // Dovecot while every account is watched
	dovecotIMAP  int           // Dovecot's IMAP sessions then (doveadm who)
	sessions     [2]float64    // xapsproxy's backend sessions then: notify, idle
	catchUps     [2]float64    // ok, failed: Dovecot's events source, at the start
	deliveries   *deliveryResult
	warnings     []string // Dovecot's log, grouped
}

// runSource measures one source: a Dovecot of its own, a fake APNs, and
// xapsproxy twice: a first process through which every device registers
// (and whose memory with no account is the baseline), then a fresh one on
// the same store, measured once it watches every account.
func (sb *sourcesBench) runSource(ctx context.Context, k sourceKind, index int) (*sourceRun, *hookResult, error) {
	n := sb.s.accounts
	run := &sourceRun{kind: k, accounts: n}
	extra := dovecotSourceConfig(n)
	var eventsAddr string
	if k.events {
		var err error
		if eventsAddr, err = freeAddr(); err != nil {
			return nil, nil, err
		}
		hook, err := dovecotrun.EventsHook("http://"+eventsAddr+dovecot.Path, eventsSecret)
		if err != nil {
			return nil, nil, err
		}
		extra += hook
	}
	dc, err := sb.startDovecot(sourceUsers(n), k.hibernate, extra)
	if err != nil {
		return nil, nil, err
	}
	defer dc.Close()
	if k.events {
		if err := dc.InstallEventsScript(); err != nil {
			return nil, nil, err
		}
	}
	apns, err := startFakeAPNs(sb.xb.pki)
	if err != nil {
		return nil, nil, err
	}
	defer apns.Close() // after xapsproxy has stopped
	devs := make([]device, n)
	for i := range devs {
		devs[i] = sourceDevice(index+1, i+1)
		apns.addDevice(devs[i].token, devs[i].accountID, devs[i].mailboxes...)
	}
	inst := instance{backend: dc.IMAPAddr, apns: apns.endpoint(sb.xb.pki), admin: true, events: eventsAddr,
		watch: []string{fmt.Sprintf("source = %q", k.source), fmt.Sprintf("poll_interval = %q", sb.s.pollInterval.String()),
			fmt.Sprintf("catchup_rate = %d", catchUpRate)}}
	name := "sources-" + k.name

	first, err := sb.xb.start(ctx, name, inst)
	if err != nil {
		return nil, nil, err
	}
	defer first.stop() // on errors; stopping again does nothing
	if run.base, err = sb.sampleProxy(ctx, first); err != nil {
		return nil, nil, err
	}
	fmt.Fprintf(sb.progress, "  %s: registering %d devices through xapsproxy\n", k.name, n)
	if run.register, err = sb.registerAll(ctx, first, devs); err != nil {
		return nil, nil, err
	}
	first.stop()
	if err := waitNoSessions(ctx, dc, 30*time.Second); err != nil {
		return nil, nil, err
	}

	start := time.Now()
	x, err := sb.xb.start(ctx, name, inst)
	if err != nil {
		return nil, nil, err
	}
	defer x.stop()
	m, err := waitMetrics(ctx, x, start.Add(sb.s.timeout), "every account watched", watchedCond(k, n))
	if err != nil {
		return nil, nil, err
	}
	run.watched = time.Since(start)
	run.catchUps = [2]float64{m[metricCatchUpsOK], m[metricCatchUpsFailed]}
	fmt.Fprintf(sb.progress, "  %s: all %d watched %.2f s after the start; Dovecot's and xapsproxy's memory\n", k.name, n, run.watched.Seconds())
	// Processes come and go meanwhile (hibernation moves sessions out of
	// theirs): sampleGroup skips those that exit.
	group := func() (int64, error) { return groupRSS(dc.Pid()), nil }
	if _, _, err := settled(ctx, group, sb.s.settle); err != nil {
		return nil, nil, err
	}
	run.dovecot = sampleGroup(dc.Pid())
	if run.dovecotIMAP, err = sessions(dc); err != nil {
		return nil, nil, err
	}
	if run.loaded, err = sb.sampleProxy(ctx, x); err != nil {
		return nil, nil, err
	}
	if m, err = scrapeMetrics(ctx, "http://"+x.admin+"/metrics"); err != nil {
		return nil, nil, err
	}
	run.sessions = [2]float64{m[metricNotifySessions], m[metricIdleSessions]}

	if run.deliveries, err = sb.deliverAll(ctx, dc, apns, k, devs); err != nil {
		return nil, nil, err
	}
	var hook *hookResult
	if k.events {
		fmt.Fprintf(sb.progress, "  %s: LMTP deliveries with the hook on and off, %d each\n", k.name, sb.s.hookDeliveries)
		if hook, err = sb.hookCost(ctx, dc); err != nil {
			return nil, nil, err
		}
	}
	x.stop()
	run.warnings = dovecotWarnings(dc.Log())
	return run, hook, nil
}

// watchedCond says when every one of n accounts is watched: with Dovecot's
// events, when each has an owner and the catch-up has looked at them all;
// otherwise when each has its connection of the source's kind in NOTIFY or
// IDLE.
func watchedCond(k sourceKind, n int) func(metrics) bool {
	want := float64(n)
	return func(m metrics) bool {
		switch {
		case k.events:
			return m[metricAccounts] == want && m[metricCatchUpPending] == 0 && m[metricCatchUpsOK]+m[metricCatchUpsFailed] >= want
		case k.source == "notify":
			return m[metricWatching] == want && m[metricNotifySessions] == want
		default:
			return m[metricWatching] == want && m[metricIdleSessions] == want
		}
	}
}

// waitMetrics polls x's /metrics until cond holds, or fails at deadline.
func waitMetrics(ctx context.Context, x *proxyProc, deadline time.Time, what string, cond func(metrics) bool) (metrics, error) {
	url := "http://" + x.admin + "/metrics"
	for {
		m, err := scrapeMetrics(ctx, url)
		if err != nil {
			return nil, err
		}
		if cond(m) {
			return m, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%s: not yet at the deadline (accounts %v, watching %v, sessions notify %v idle %v, catch-up pending %v); xapsproxy's log ends:\n%s",
				what, m[metricAccounts], m[metricWatching], m[metricNotifySessions], m[metricIdleSessions], m[metricCatchUpPending], x.out.String())
		}
		if err := sleep(ctx, metricsPoll); err != nil {
			return nil, err
		}
	}
}

// sampleProxy waits for x's RSS to settle and reads its goroutines and Go
// memory from /metrics.
func (sb *sourcesBench) sampleProxy(ctx context.Context, x *proxyProc) (proxySample, error) {
	var s proxySample
	var err error
	if s.rss, s.settled, err = settledRSS(ctx, func() []int { return []int{x.pid()} }, sb.s.settle); err != nil {
		return s, err
	}
	m, err := scrapeMetrics(ctx, "http://"+x.admin+"/metrics")
	if err != nil {
		return s, err
	}
	s.goroutines, s.heap, s.stacks = m[metricGoroutines], m[metricHeapInuse], m[metricStackInuse]
	return s, nil
}

// registerAll registers every device through x, a few at once, and
// returns how long it took.
func (sb *sourcesBench) registerAll(ctx context.Context, x *proxyProc, devs []device) (time.Duration, error) {
	start := time.Now()
	t := target{name: "xapsproxy", addr: x.addr, tls: sb.clientTLS}
	var (
		next  atomic.Int64
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	for range min(registerConcurrency, len(devs)) {
		wg.Go(func() {
			for i := next.Add(1) - 1; i < int64(len(devs)) && ctx.Err() == nil; i = next.Add(1) - 1 {
				if err := registerDevice(ctx, t, devs[i]); err != nil {
					mu.Lock()
					if first == nil {
						first = fmt.Errorf("%s: %w", devs[i].user, err)
					}
					mu.Unlock()
					next.Store(int64(len(devs)))
					return
				}
			}
		})
	}
	wg.Wait()
	if first != nil {
		return 0, first
	}
	return time.Since(start), ctx.Err()
}

// waitNoSessions waits until Dovecot has reaped every IMAP session, so that
// what follows starts against an idle Dovecot.
func waitNoSessions(ctx context.Context, dc *dovecotrun.Instance, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		n, err := sessions(dc)
		if err != nil {
			return err
		}
		if n == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("dovecot still has %d sessions %v after xapsproxy stopped", n, timeout)
		}
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
}

// freeAddr is a loopback address whose port was free a moment ago.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}
