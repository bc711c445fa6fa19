package main

import (
	"cmp"
	"fmt"
	"maps"
	"runtime"
	"slices"
	"strings"
	"time"
)

// pushesResults is everything one `xapsbench pushes` measured.
type pushesResults struct {
	env       *environment
	s         pushesSettings
	storePath string
	storeFS   string
	load      time.Duration // storing the registrations
	warmup    int
	warmConns int64 // connections the fake accepted during the warm-up
	fakePid   int
	baseline  memSample
	runs      []*pushesRun
	took      time.Duration
}

// The goals.
const (
	goalPushesNoDelay = 10000 // pushes/s with a 0 ms answer delay, on 2 cores
	goalPushesDelayed = 5000  // with 50 ms
	goalDelayed       = 50 * time.Millisecond
	goalDrain         = 10 * time.Second // recovery -> backlog drained
	// Memory is back at its baseline when what a run leaves, after a
	// collection that returned what it could, is at most memSlackFraction
	// of what the run took at its peak, or memSlackKiB, whichever is more:
	// a leak grows with the devices pushed, the slack does not.
	memSlackFraction = 0.10
	memSlackKiB      = 4 << 10
)

// errors counts what went wrong: devices without exactly one push,
// requests that were not the push xapsproxy must send.
func (res *pushesResults) errors() int {
	n := 0
	for _, r := range res.runs {
		n += r.missing + r.dupDevices + int(r.final.Malformed+r.final.Unknown)
	}
	return n
}

// memLeft is what run r left above the baseline, in KiB, and whether that
// is within the slack, for RSS and the Go heap.
func (res *pushesResults) memLeft(r *pushesRun) (rss, heap int64, rssOK, heapOK bool) {
	b := res.baseline
	ok := func(left, grew int64) bool { return left <= max(memSlackKiB, int64(memSlackFraction*float64(grew))) }
	rss, heap = r.after.rss-b.rss, r.after.heapKiB()-b.heapKiB()
	return rss, heap, ok(rss, r.peak.rss-b.rss), ok(heap, r.peak.heapKiB()-b.heapKiB())
}

func printPushes(r *report, res *pushesResults) {
	s := res.s
	r.f("xapsbench pushes: the push stage at scale, against a fake APNs (HTTP/2 over TLS, 127.0.0.1) in a process of its own")
	res.env.print(r)
	r.f("devices:      %d registered, each its own user (u%%06d), account id and token, INBOX, version 2, topic %s;", s.devices, apnsTopic)
	r.f("              stored with store.Register from %d goroutines in %.1f s (%.0f/s)", s.registrars, res.load.Seconds(), float64(s.devices)/res.load.Seconds())
	r.f("store:        SQLite (store.Open) on %s at %s, as xapsproxy runs it: mailbox state, outbox and outcomes", res.storeFS, res.storePath)
	r.f("              committed without an fsync (synchronous=NORMAL), registrations with one (FULL); concurrent")
	r.f("              CommitMailbox and FinishPushes sharing transactions (group commit)")
	r.f("push stage:   push.New in this process, push.NewAPNs with the bench's APNs certificate: [apns] concurrency %d (pushes in", s.concurrency)
	r.f("              flight), connections %d; its log's warnings and errors are counted (listed per run below)", s.connections)
	r.f("events:       per device one new mail: CommitMailbox (INBOX's state and an outbox entry), then Notify, as an account's")
	r.f("              owner does on new mail, from %d goroutines as fast as the store takes them", s.committers)
	r.f("fake APNs:    pid %d: HTTP/2 over TLS, client certificate required and verified, MAX_CONCURRENT_STREAMS %d; answers", res.fakePid, s.streams)
	r.f("              POST /3/device/<token> with 200 and an apns-id after the run's delay, checks each request against the push")
	r.f("              the device must get, and counts per token the requests answered 200")
	r.f("warm-up:      %d pushes through the whole stage before the first run, not measured; the fake accepted %d connection(s)", res.warmup, res.warmConns)
	if s.cpuProfile != "" {
		r.f("profiles:     %s (this process, the measured runs), %s.fake-apns (the fake APNs)", s.cpuProfile, s.cpuProfile)
	}
	var bursts []*pushesRun
	var outage *pushesRun
	for _, run := range res.runs {
		if run.outage > 0 {
			outage = run
		} else {
			bursts = append(bursts, run)
		}
	}
	if len(bursts) > 0 {
		r.f("")
		r.f("Bursts: every device gets one new mail at once. pushes/s = devices / (first event -> last request answered 200);")
		r.f("sustained = between the 10th and the 90th percentile of the answers; events/s: committed (staged: notified, every")
		r.f("event committed beforehand, so that the push stage does not wait for the committers); ms from the event (committed;")
		r.f("staged: notified) to its request arriving at the fake APNs; idle = first event -> nothing pending, the outbox empty;")
		r.f("CPU in cores over the run; conns: connections the fake accepted during the run / open at its end")
		const row = "  %-11s %9s %9s %9s %8s %8s %8s %7s %6s %6s %7s  %s"
		r.f(row, "delay", "events/s", "pushes/s", "sustained", "p50", "p99", "max", "idle", "CPU", "fake", "conns", "200s per device")
		for _, run := range bursts {
			q := run.latency.ms()
			name, events := run.delay.String(), run.injectRate()
			if run.staged {
				name, events = name+" staged", run.notifyRate()
			}
			opened, open := run.newConns()
			r.f(row, name, fmt.Sprintf("%.0f", events), fmt.Sprintf("%.0f", run.throughput()), fmt.Sprintf("%.0f", run.sustained()),
				q[0], q[2], q[3], fmt.Sprintf("%.2fs", time.Duration(run.idleAt-run.firstEvent).Seconds()),
				fmt.Sprintf("%.2f", run.cpuBench.Seconds()/run.wall.Seconds()), fmt.Sprintf("%.2f", run.cpuFake.Seconds()/run.wall.Seconds()),
				fmt.Sprintf("%d/%d", opened, open), perDevice(run))
		}
		for _, run := range bursts {
			if run.staged {
				r.f("  %s: the events were committed at %.0f/s (%.1f s) before the first was notified", runName(run), run.injectRate(),
					time.Duration(run.lastEvent-run.injectStart).Seconds())
			}
		}
		for _, run := range bursts {
			printRunProblems(r, run)
		}
	}
	if outage != nil {
		r.f("")
		printOutage(r, outage)
	}
	r.f("")
	r.f("Memory of this process (the push stage, the store, the committers), MiB: VmRSS; Go: what the Go runtime has mapped and")
	r.f("not released (heap, stacks, its own; the rest of RSS is mostly SQLite's C heap and the binary); heap: Go heap objects.")
	r.f("Before and after: after runtime.GC and debug.FreeOSMemory; peak: sampled every 100 ms; left = after - the baseline,")
	b := res.baseline
	r.f("taken before the first run, the warm-up done: %s RSS, %s Go, %s heap", mib(b.rss), mib(b.goKiB()), mib(b.heapKiB()))
	const row = "  %-17s %7s %7s %7s %7s   %7s %7s %7s   %7s %7s %7s %7s  %s"
	r.f(row, "run", "RSS", "peak", "after", "left", "Go", "after", "left", "heap", "peak", "after", "left", "goroutines peak")
	f1 := func(kib int64) string { return fmt.Sprintf("%.1f", mibs(kib)) }
	f1s := func(kib int64) string { return fmt.Sprintf("%+.1f", mibs(kib)) }
	for _, run := range res.runs {
		rss, heap, _, _ := res.memLeft(run)
		r.f(row, runName(run), f1(run.before.rss), f1(run.peak.rss), f1(run.after.rss), f1s(rss),
			f1(run.peak.goKiB()), f1(run.after.goKiB()), f1s(run.after.goKiB()-b.goKiB()),
			f1(run.before.heapKiB()), f1(run.peak.heapKiB()), f1(run.after.heapKiB()), f1s(heap), fmt.Sprint(run.peak.goroutines))
	}
	r.f("  (RSS and heap columns: before, peak, after, left; Go: peak, after, left)")
	r.f("")
	r.f("The push stage's warnings and errors, per run")
	for _, run := range res.runs {
		printLogs(r, run)
	}
	r.f("")
	printPushesGoals(r, res, bursts, outage)
	r.f("")
	r.f("took %.1f min; rerun: %s   (from the repository root; -quick for a smoke test, -h for the knobs)", res.took.Minutes(), res.env.command)
}

func runName(run *pushesRun) string {
	switch {
	case run.outage > 0:
		return fmt.Sprintf("outage %v", run.outage)
	case run.staged:
		return fmt.Sprintf("delay %v staged", run.delay)
	}
	return fmt.Sprintf("delay %v", run.delay)
}

// perDevice says how many 200s the devices got: "1 each" when exact.
func perDevice(run *pushesRun) string {
	if run.exact() {
		return "1 each"
	}
	return fmt.Sprintf("ERROR: %d devices none, %d more than one (max %d)", run.missing, run.dupDevices, run.maxOK)
}

func printRunProblems(r *report, run *pushesRun) {
	f := run.final
	if f.Malformed+f.Unknown > 0 {
		r.f("  %s: ERRORS: %d malformed request(s), %d for no device of the run: %s", runName(run), f.Malformed, f.Unknown, firstFew(f.Problems, 3))
	}
	if f.Cancelled > 0 {
		r.f("  %s: %d request(s) given up by the push stage before the fake answered", runName(run), f.Cancelled)
	}
	if f.Log != "" {
		r.f("  %s: the fake APNs's HTTP server logged: %s", runName(run), strings.ReplaceAll(strings.TrimSpace(f.Log), "\n", " | "))
	}
}

func printOutage(r *report, run *pushesRun) {
	rec, f := run.recovery, run.final
	failFor := time.Duration(rec.At - run.failFrom)
	r.f("Outage: the fake APNs answered 500 InternalServerError for %.1f s (-outage %v); the burst of %d events went in during it,", failFor.Seconds(), run.outage, run.devices)
	r.f("committed at %.0f/s (in %.1f s)%s, then it answered 200 again (the recovery)", run.injectRate(), time.Duration(run.lastEvent-run.injectStart).Seconds(),
		map[bool]string{true: " — longer than the outage: the recovery came once the burst was in", false: ""}[run.injectOutlastedIt])
	r.f("  during the outage: %d requests, %d answered 500: %.1f per device, %.0f/s", rec.Requests, rec.Failed,
		float64(rec.Failed)/float64(run.devices), float64(rec.Failed)/failFor.Seconds())
	d := run.drain
	r.f("  recovery -> each device's 200, s: first %.2f (the push that found APNs back), p50 %.2f, p90 %.2f, p99 %.2f, last %.2f",
		d.min.Seconds(), d.p50.Seconds(), d.p90.Seconds(), d.p99.Seconds(), d.max.Seconds())
	r.f("  (the backlog drained); %.0f pushes/s from the first to the last", float64(d.n)/(d.max-d.min).Seconds())
	r.f("  after the recovery: %d requests, %d answered 500 (in flight at the switch); %d/%d devices got their push; 200s per device: max %d,",
		f.Requests-rec.Requests, f.Failed-rec.Failed, run.devices-run.missing, run.devices, run.maxOK)
	r.f("  devices with none %d, with more than one %d; idle (nothing pending, the outbox empty) %.2f s after the recovery",
		run.missing, run.dupDevices, time.Duration(run.idleAt-rec.At).Seconds())
	opened, open := run.newConns()
	r.f("  CPU over the run (%.1f s): this process %.2f cores, the fake APNs %.2f; connections to the fake: %d opened, %d open at the end",
		run.wall.Seconds(), run.cpuBench.Seconds()/run.wall.Seconds(), run.cpuFake.Seconds()/run.wall.Seconds(), opened, open)
	printRunProblems(r, run)
}

func printLogs(r *report, run *pushesRun) {
	if len(run.logs) == 0 {
		r.f("  %-17s none", runName(run))
		return
	}
	keys := slices.SortedFunc(maps.Keys(run.logs), func(a, b string) int { return cmp.Compare(run.logs[b], run.logs[a]) })
	for i, k := range keys {
		name := ""
		if i == 0 {
			name = runName(run)
		}
		if i == 5 {
			r.f("  %-17s ... and %d other messages", "", len(keys)-i)
			break
		}
		r.f("  %-17s %8d  %s", name, run.logs[k], k)
	}
}

func printPushesGoals(r *report, res *pushesResults, bursts []*pushesRun, outage *pushesRun) {
	r.f("Goals")
	goal := func(name string, met bool, how string) {
		v := "NOT MET"
		if met {
			v = "MET"
		}
		r.f("  %-44s %-8s %s", name, v, how)
	}
	cores := fmt.Sprintf("%d CPUs, GOMAXPROCS %d", res.env.cpus, runtime.GOMAXPROCS(0))
	if res.env.cpus != 2 {
		cores += "; the goals are for 2"
	}
	for _, g := range []struct {
		delay time.Duration
		want  float64
	}{{0, goalPushesNoDelay}, {goalDelayed, goalPushesDelayed}} {
		name := fmt.Sprintf(">= %d pushes/s with %d ms delay", int(g.want), g.delay.Milliseconds())
		i := slices.IndexFunc(bursts, func(b *pushesRun) bool { return b.delay == g.delay && !b.staged })
		if i < 0 {
			r.f("  %-44s %-8s %s", name, "n/a", "no burst with this delay (-delays)")
			continue
		}
		b := bursts[i]
		how := fmt.Sprintf("%.0f pushes/s (sustained %.0f), events committed at %.0f/s", b.throughput(), b.sustained(), b.injectRate())
		if j := slices.IndexFunc(bursts, func(b *pushesRun) bool { return b.delay == g.delay && b.staged }); j >= 0 {
			how += fmt.Sprintf("; staged %.0f pushes/s", bursts[j].throughput())
		}
		goal(name, b.throughput() >= g.want, how+" ("+cores+")")
	}
	var bad []string
	for _, run := range res.runs {
		rss, heap, rssOK, heapOK := res.memLeft(run)
		if !rssOK || !heapOK {
			bad = append(bad, fmt.Sprintf("%s left %+.1f MiB RSS, %+.1f MiB heap", runName(run), mibs(rss), mibs(heap)))
		}
	}
	how := fmt.Sprintf("after each run, RSS and heap within max(%d MiB, %.0f%% of the run's peak growth) of the baseline", memSlackKiB>>10, memSlackFraction*100)
	if len(bad) > 0 {
		how += ": " + strings.Join(bad, "; ")
	}
	goal("memory returns to its baseline", len(bad) == 0, how)
	var inexact []string
	for _, run := range res.runs {
		if !run.exact() || run.final.Malformed+run.final.Unknown > 0 {
			inexact = append(inexact, fmt.Sprintf("%s: %d none, %d several, %d malformed", runName(run), run.missing, run.dupDevices, run.final.Malformed+run.final.Unknown))
		}
	}
	how = fmt.Sprintf("every device exactly one 200 in each of %d run(s), every request well formed", len(res.runs))
	if len(inexact) > 0 {
		how = strings.Join(inexact, "; ")
	}
	goal("every push delivered exactly once", len(inexact) == 0, how)
	if outage == nil {
		r.f("  %-44s %-8s %s", fmt.Sprintf("backlog drained <= %v after an outage", goalDrain), "n/a", "no outage run (-outage 0)")
		return
	}
	goal(fmt.Sprintf("backlog drained <= %v after an outage", goalDrain), outage.missing == 0 && outage.drained() <= goalDrain,
		fmt.Sprintf("last 200 %.2f s after the recovery (p50 %.2f s); %d requests answered 500 during the %v outage (%.1f per device)",
			outage.drained().Seconds(), outage.drain.p50.Seconds(), outage.recovery.Failed, outage.outage,
			float64(outage.recovery.Failed)/float64(outage.devices)))
}
