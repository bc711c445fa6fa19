package main

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	rtmetrics "runtime/metrics"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/xapsproxy/xapsproxy/event"
	"github.com/xapsproxy/xapsproxy/store"
)

// pushesRun is one measured burst: every device gets one new mail, with
// the fake APNs answering after delay, or failing for outage first.
// Staged, every event is committed first and then all are notified at
// once, so that the push stage is measured without the committers' pace.
type pushesRun struct {
	delay   time.Duration
	outage  time.Duration // 0 = no outage
	staged  bool
	devices int

	before, peak, after memSample
	injectStart         int64       // unix nanos: the committers started
	firstEvent          int64       // the first event committed (staged: notified)
	lastEvent           int64       // the last event committed
	notifyStart         int64       // staged: the first Notify
	notifyEnd           int64       // staged: the last Notify returned
	connsBefore         fakeSummary // the fake's totals before the run
	idleAt              int64       // the push stage idle: Pending 0, outbox empty
	cpuBench, cpuFake   time.Duration
	wall                time.Duration // committers' start (staged: the first Notify) to idle
	final               fakeSummary   // the fake's totals at the end
	logs                map[string]int

	latency           durQuantiles // event -> its request at the fake
	lastAnswer        int64        // unix nanos of the last 200
	sustainedRate     float64      // see sustained
	missing, extra    int          // devices without a 200; 200s beyond one per device
	dupDevices        int          // devices with more than one 200
	maxOK             int32        // most 200s of one device
	failFrom          int64        // outage: when the fake began answering 500
	recovery          fakeSummary  // outage: the fake's totals at the switch back to 200 (At)
	drain             durQuantiles // outage: recovery -> each device's 200
	injectOutlastedIt bool         // outage: the burst took longer than the outage
}

// throughput is devices / (first event -> last request answered 200).
func (r *pushesRun) throughput() float64 {
	if r.lastAnswer == 0 {
		return 0
	}
	return float64(r.devices) / time.Duration(r.lastAnswer-r.firstEvent).Seconds()
}

// sustained is the rate between the 10th and the 90th percentile of the
// devices' answers.
func (r *pushesRun) sustained() float64 { return r.sustainedRate }

// notifyRate is the events notified a second in a staged run.
func (r *pushesRun) notifyRate() float64 {
	return float64(r.devices) / time.Duration(max(r.notifyEnd-r.notifyStart, 1)).Seconds()
}

// newConns is the connections the fake accepted during the run, open
// those open at its end.
func (r *pushesRun) newConns() (opened, open int64) {
	return r.final.Conns - r.connsBefore.Conns, r.final.Conns - r.final.Closed
}

// injectRate is the events committed a second.
func (r *pushesRun) injectRate() float64 {
	return float64(r.devices) / time.Duration(r.lastEvent-r.injectStart).Seconds()
}

// drained is the recovery to the last device's 200 (outage runs).
func (r *pushesRun) drained() time.Duration { return r.drain.max }

// exact reports whether every device got exactly one 200.
func (r *pushesRun) exact() bool { return r.missing == 0 && r.maxOK == 1 }

// burst runs one measured burst (see pushesRun).
func (b *pushesBench) burst(ctx context.Context, delay, outage time.Duration, staged bool) (*pushesRun, error) {
	n := b.s.devices
	r := &pushesRun{delay: delay, outage: outage, staged: staged, devices: n}
	if err := b.fake.do("reset"); err != nil {
		return nil, err
	}
	if err := b.fake.setDelay(delay); err != nil {
		return nil, err
	}
	var err error
	if r.connsBefore, err = b.fake.setMode(200); err != nil {
		return nil, err
	}
	b.log.take()
	r.before = settledMem()
	sampler := startMemSampler(100 * time.Millisecond)
	defer sampler.finish()
	cpuB, cpuF, err := b.cpu()
	if err != nil {
		return nil, err
	}
	began := time.Now()
	if outage > 0 {
		s, err := b.fake.setMode(500)
		if err != nil {
			return nil, err
		}
		r.failFrom = s.At
	}
	if r.injectStart, r.lastEvent, err = b.inject(ctx, n, !staged); err != nil {
		return nil, err
	}
	if staged {
		// CPU and wall time of the push stage alone, from the first Notify.
		if cpuB, cpuF, err = b.cpu(); err != nil {
			return nil, err
		}
		began = time.Now()
		r.notifyStart, r.notifyEnd = b.notifyAll(n)
	}
	r.firstEvent = slices.Min(b.commitAt[:n])
	deadline := time.Now().Add(b.s.timeout)
	if outage > 0 {
		wait := time.Until(time.Unix(0, r.failFrom).Add(outage))
		r.injectOutlastedIt = wait <= 0
		if err := sleep(ctx, wait); err != nil {
			return nil, err
		}
		if r.recovery, err = b.fake.setMode(200); err != nil {
			return nil, err
		}
		fmt.Fprintf(b.progress, "pushes: the fake APNs answers 200 again, after %d requests answered 500\n", r.recovery.Failed)
		deadline = time.Now().Add(b.s.timeout)
		var got int64
		err := pollUntil(ctx, 10*time.Millisecond, deadline, "every device's push after the recovery", func() (bool, error) {
			s, err := b.fake.summary()
			got = s.DevicesOK
			return got >= int64(n), err
		})
		if err != nil {
			return nil, fmt.Errorf("%w (%d of %d devices got one; the push stage has %d pending)", err, got, n, b.pusher.Pending())
		}
	}
	idle, err := b.waitIdle(ctx, deadline)
	if err != nil {
		return nil, err
	}
	r.idleAt = idle.UnixNano()
	r.wall = idle.Sub(began)
	cpuB2, cpuF2, err := b.cpu()
	if err != nil {
		return nil, err
	}
	r.cpuBench, r.cpuFake = cpuB2-cpuB, cpuF2-cpuF
	r.peak = sampler.finish()
	if err := b.waitWorkersGone(ctx); err != nil {
		return nil, err
	}
	r.after = settledMem()
	r.logs = b.log.take()
	if r.final, err = b.fake.summary(); err != nil {
		return nil, err
	}
	recs, err := b.fake.records()
	if err != nil {
		return nil, err
	}
	if len(recs) != n {
		return nil, fmt.Errorf("fake APNs: records of %d devices, want %d", len(recs), n)
	}
	r.analyse(recs, b.commitAt)
	return r, nil
}

// analyse computes the per-device figures from the fake's records. The
// run keeps only the figures: what it holds stays out of the memory
// measured in later runs.
func (r *pushesRun) analyse(recs []fakeRecord, commitAt []int64) {
	answers := make([]int64, 0, len(recs))
	var latency, drain []time.Duration
	for i, rec := range recs {
		switch {
		case rec.ok == 0:
			r.missing++
		case rec.ok > 1:
			r.dupDevices++
			r.extra += int(rec.ok) - 1
		}
		r.maxOK = max(r.maxOK, rec.ok)
		if rec.first > 0 && r.outage == 0 {
			latency = append(latency, time.Duration(rec.first-commitAt[i]))
		}
		if rec.lastOK > 0 {
			answers = append(answers, rec.lastOK)
			if r.outage > 0 {
				drain = append(drain, time.Duration(rec.lastOK-r.recovery.At))
			}
		}
	}
	r.latency, r.drain = quantiles(latency), quantiles(drain)
	slices.Sort(answers)
	if n := len(answers); n > 0 {
		r.lastAnswer = answers[n-1]
		if lo, hi := answers[n/10], answers[n*9/10]; n >= 10 && hi > lo {
			r.sustainedRate = float64(n*9/10-n/10) / time.Duration(hi-lo).Seconds()
		}
	}
}

// durQuantiles summarises durations.
type durQuantiles struct {
	n                       int
	min, p50, p90, p99, max time.Duration
}

func quantiles(d []time.Duration) durQuantiles {
	if len(d) == 0 {
		return durQuantiles{}
	}
	slices.Sort(d)
	return durQuantiles{n: len(d), min: d[0], p50: percentile(d, 50), p90: percentile(d, 90), p99: percentile(d, 99), max: d[len(d)-1]}
}

// ms is p50, p90, p99 and max in ms, or dashes.
func (q durQuantiles) ms() [4]string {
	if q.n == 0 {
		return [4]string{"-", "-", "-", "-"}
	}
	f := func(d time.Duration) string { return fmt.Sprintf("%.1f", ms(d)) }
	return [4]string{f(q.p50), f(q.p90), f(q.p99), f(q.max)}
}

// inject commits one new mail in INBOX for devices 0..n-1 and, if notify,
// notifies the push stage of each, as an account's owner does (watch's
// owner.commit), from the committers goroutines, recording when each
// commit returned. It returns when the committers started and when the
// last of them was done. Without notify, the events wait in b.ids for
// notifyAll.
func (b *pushesBench) inject(ctx context.Context, n int, notify bool) (start, end int64, err error) {
	uid := b.uidNext
	b.uidNext++
	var next atomic.Int64
	var failed atomic.Pointer[error]
	var wg sync.WaitGroup
	start = time.Now().UnixNano()
	for range min(b.s.committers, n) {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < n && failed.Load() == nil && ctx.Err() == nil; i = int(next.Add(1) - 1) {
				user := pushesUser(i)
				id, err := b.st.CommitMailbox(ctx, user, "INBOX", &store.MailboxState{UIDValidity: 1, UIDNext: uid},
					&store.OutboxEntry{At: time.Now()})
				if err != nil {
					err = fmt.Errorf("event %d: %w", i, err)
					failed.CompareAndSwap(nil, &err)
					return
				}
				b.commitAt[i] = time.Now().UnixNano()
				if !notify {
					b.ids[i] = id
					continue
				}
				b.pusher.Notify(event.Event{User: user, Mailbox: "INBOX", Kind: event.KindNew, ID: id})
			}
		})
	}
	wg.Wait()
	end = time.Now().UnixNano()
	if err := failed.Load(); err != nil {
		return start, end, *err
	}
	return start, end, ctx.Err()
}

// notifyAll notifies the push stage of the events inject committed, as
// fast as it takes them, recording when each was notified.
func (b *pushesBench) notifyAll(n int) (start, end int64) {
	start = time.Now().UnixNano()
	for i := range n {
		b.pusher.Notify(event.Event{User: pushesUser(i), Mailbox: "INBOX", Kind: event.KindNew, ID: b.ids[i]})
		b.commitAt[i] = time.Now().UnixNano()
	}
	return start, time.Now().UnixNano()
}

// waitIdle waits until the push stage has nothing pending and the
// store's outbox is empty, and returns when it found them so.
func (b *pushesBench) waitIdle(ctx context.Context, deadline time.Time) (time.Time, error) {
	var lastRead, idle time.Time
	outbox := 0
	err := pollUntil(ctx, 2*time.Millisecond, deadline, "the push stage to be idle (nothing pending, the outbox empty)", func() (bool, error) {
		if b.pusher.Pending() != 0 || time.Since(lastRead) < 20*time.Millisecond {
			return false, nil
		}
		lastRead = time.Now()
		entries, err := b.st.Outbox(ctx)
		outbox = len(entries)
		idle = time.Now()
		return outbox == 0, err
	})
	if err != nil {
		return idle, fmt.Errorf("%w (%d pending, %d in the outbox)", err, b.pusher.Pending(), outbox)
	}
	return idle, nil
}

// cpu returns the CPU time used so far by this process and the fake.
func (b *pushesBench) cpu() (bench, fake time.Duration, err error) {
	if bench, err = cpuTime(os.Getpid()); err != nil {
		return 0, 0, err
	}
	fake, err = cpuTime(b.fake.pid())
	return bench, fake, err
}

// pollUntil calls cond every interval until it holds, ctx is done or the
// deadline passes.
func pollUntil(ctx context.Context, every time.Duration, deadline time.Time, what string, cond func() (bool, error)) error {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		ok, err := cond()
		if err != nil {
			return fmt.Errorf("waiting for %s: %w", what, err)
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out waiting for %s", what)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// memSample is this process's memory at one moment.
type memSample struct {
	rss        int64  // KiB, VmRSS
	goMapped   uint64 // bytes the Go runtime has mapped and not released: heap, stacks, its own (not SQLite's C heap)
	heap       uint64 // bytes in heap objects: live, and garbage not yet swept
	goroutines int
}

func (m memSample) heapKiB() int64 { return int64(m.heap / 1024) }

func (m memSample) goKiB() int64 { return int64(m.goMapped / 1024) }

func (m memSample) max(o memSample) memSample {
	return memSample{rss: max(m.rss, o.rss), goMapped: max(m.goMapped, o.goMapped), heap: max(m.heap, o.heap), goroutines: max(m.goroutines, o.goroutines)}
}

// sampleMem reads the memory without stopping the world.
func sampleMem() memSample {
	s := []rtmetrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/sched/goroutines:goroutines"},
		{Name: "/memory/classes/total:bytes"}, {Name: "/memory/classes/heap/released:bytes"}}
	rtmetrics.Read(s)
	rss, _ := rssKiB(os.Getpid())
	return memSample{rss: rss, heap: s[0].Value.Uint64(), goroutines: int(s[1].Value.Uint64()),
		goMapped: s[2].Value.Uint64() - s[3].Value.Uint64()}
}

// settledMem is the memory after a collection that returned what it could
// to the system: the heap is then the live heap.
func settledMem() memSample {
	runtime.GC()
	debug.FreeOSMemory()
	return sampleMem()
}

// memSampler keeps the highest of each figure sampled periodically.
type memSampler struct {
	stop chan struct{}
	done chan struct{}
	once sync.Once
	peak memSample
}

func startMemSampler(every time.Duration) *memSampler {
	m := &memSampler{stop: make(chan struct{}), done: make(chan struct{}), peak: sampleMem()}
	go func() {
		defer close(m.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-m.stop:
				return
			case <-t.C:
			}
			m.peak = m.peak.max(sampleMem())
		}
	}()
	return m
}

// finish stops the sampling (once; later calls only return) and returns
// the peaks, the present included.
func (m *memSampler) finish() memSample {
	m.once.Do(func() {
		close(m.stop)
		<-m.done
		m.peak = m.peak.max(sampleMem())
	})
	return m.peak
}

// waitWorkersGone waits until the push stage's worker goroutines, which
// outlive a push by a few seconds, have exited, so that "after" measures
// what stays once the stage is at rest, as "before" does.
func (b *pushesBench) waitWorkersGone(ctx context.Context) error {
	return pollUntil(ctx, 50*time.Millisecond, time.Now().Add(time.Minute), "the push workers to exit", func() (bool, error) {
		return b.pusher.Stats().Workers == 0, nil
	})
}
