package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/xapsproxy/xapsproxy/store"
)

// memRun is xapsproxy's memory with many accounts of one source, against
// a baseline with none, both against the fake IMAP server.
type memRun struct {
	kind         sourceKind
	accounts     int
	base, loaded proxySample
	afterGC      *proxySample  // with -after-gc: after the next collection
	gcWait       time.Duration // from loaded to that collection
	fill         time.Duration // to store every registration
	load         time.Duration // exec to every account watched
	fakeConns    int64         // the fake server's open connections when measured
	catchUps     [2]float64    // ok, failed (Dovecot's events)
}

// memCatchUpRate is watch.catchup_rate in the memory runs: as fast as the
// login limit lets the catch-up go.
const memCatchUpRate = 1000000

// memoryRuns measures xapsproxy's memory per account at scale: NOTIFY and
// IDLE with a connection per account to the fake IMAP server, and
// Dovecot's events with none. Each account's registration (INBOX and
// Notes) and mailbox state are stored before xapsproxy starts, as if the
// devices had registered earlier.
func (sb *sourcesBench) memoryRuns(ctx context.Context) ([]memRun, error) {
	plans := []struct {
		kind string
		n    int
	}{{"notify", sb.s.memNotify}, {"idle", sb.s.memIdle}, {"dovecot", sb.s.memEvents}}
	var runs []memRun
	var fake *fakeIMAP
	var storeDir string
	for _, p := range plans {
		if p.n == 0 {
			continue
		}
		if fake == nil {
			var err error
			if fake, err = startFakeIMAP(); err != nil {
				return nil, err
			}
			defer fake.Close()
			// The stores are filled with one commit per row, each
			// fsynced: on tmpfs, when there is one, that is quick.
			base := "/dev/shm"
			if st, err := os.Stat(base); err != nil || !st.IsDir() {
				base = sb.dir
			}
			if storeDir, err = os.MkdirTemp(base, "xapsbench"); err != nil {
				return nil, fmt.Errorf("store directory: %w", err)
			}
			defer os.RemoveAll(storeDir)
		}
		k, _ := kindNamed(p.kind)
		r, err := sb.memoryRun(ctx, fake, storeDir, k, p.n)
		if err != nil {
			return nil, fmt.Errorf("memory run %s: %w", k.name, err)
		}
		runs = append(runs, r)
	}
	return runs, nil
}

func (sb *sourcesBench) memoryRun(ctx context.Context, fake *fakeIMAP, storeDir string, k sourceKind, n int) (memRun, error) {
	r := memRun{kind: k, accounts: n}
	fmt.Fprintf(sb.progress, "memory run %s: storing %d registrations\n", k.name, n)
	full := filepath.Join(storeDir, k.name+".db")
	start := time.Now()
	if err := fillStore(ctx, full, n); err != nil {
		return r, err
	}
	r.fill = time.Since(start)
	inst := instance{backend: fake.addr(), admin: true, store: filepath.Join(storeDir, k.name+"-empty.db"),
		watch: []string{fmt.Sprintf("source = %q", k.source), fmt.Sprintf("catchup_rate = %d", memCatchUpRate)}}
	if k.events {
		addr, err := freeAddr()
		if err != nil {
			return r, err
		}
		inst.events = addr
	}
	name := "memory-" + k.name
	x, err := sb.xb.start(ctx, name, inst)
	if err != nil {
		return r, err
	}
	defer x.stop() // on errors; stopping again does nothing
	if r.base, err = sb.sampleProxy(ctx, x); err != nil {
		return r, err
	}
	x.stop()

	fmt.Fprintf(sb.progress, "memory run %s: xapsproxy with %d accounts\n", k.name, n)
	inst.store = full
	start = time.Now()
	if x, err = sb.xb.start(ctx, name, inst); err != nil {
		return r, err
	}
	defer x.stop()
	if _, err := waitMetrics(ctx, x, start.Add(sb.s.timeout), "every account watched", watchedCond(k, n)); err != nil {
		return r, err
	}
	r.load = time.Since(start)
	if r.loaded, err = sb.sampleProxy(ctx, x); err != nil {
		return r, err
	}
	m, err := scrapeMetrics(ctx, "http://"+x.admin+"/metrics")
	if err != nil {
		return r, err
	}
	r.catchUps = [2]float64{m[metricCatchUpsOK], m[metricCatchUpsFailed]}
	r.fakeConns = fake.conns.Load()
	fmt.Fprintf(sb.progress, "memory run %s: all watched after %.1f s; RSS %d -> %d KiB\n", k.name, r.load.Seconds(), r.base.rss, r.loaded.rss)
	if sb.s.afterGC {
		fmt.Fprintf(sb.progress, "memory run %s: waiting for xapsproxy's next garbage collection (at most %v)\n", k.name, gcWaitLimit)
		waited := time.Now()
		gcs := m[metricGCs]
		if _, err := waitMetrics(ctx, x, waited.Add(gcWaitLimit), "a garbage collection", func(m metrics) bool { return m[metricGCs] > gcs }); err != nil {
			return r, err
		}
		r.gcWait = time.Since(waited)
		s, err := sb.sampleProxy(ctx, x)
		if err != nil {
			return r, err
		}
		r.afterGC = &s
	}
	return r, nil
}

// gcWaitLimit bounds the wait for a garbage collection: the Go runtime
// forces one when there was none for 2 minutes.
const gcWaitLimit = 150 * time.Second

const metricGCs = "go_gc_duration_seconds_count"

// fillStore stores n registrations (INBOX and Notes, one device each) and
// the state of both mailboxes as the fake IMAP server has them, so that
// xapsproxy finds nothing new and writes nothing.
func fillStore(ctx context.Context, path string, n int) error {
	st, err := store.Open(ctx, path)
	if err != nil {
		return err
	}
	defer st.Close()
	now := time.Now()
	empty := store.MailboxState{UIDValidity: 1, UIDNext: 1}
	for i := 1; i <= n; i++ {
		user := reconnectUser(i)
		reg := store.Registration{
			User: user, DeviceToken: fmt.Sprintf("%064x", i), AccountID: fmt.Sprintf("ACCOUNT-%d", i),
			Subtopic: "com.apple.mobilemail", Mailboxes: []string{"INBOX", "Notes"}, Version: 2,
			Topic: apnsTopic, Registered: now, Renewed: now,
		}
		if err := st.Register(ctx, reg); err != nil {
			return fmt.Errorf("registration %d: %w", i, err)
		}
		for _, mb := range reg.Mailboxes {
			if err := st.SetMailboxState(ctx, user, mb, empty); err != nil {
				return fmt.Errorf("mailbox state %d: %w", i, err)
			}
		}
	}
	return nil
}
