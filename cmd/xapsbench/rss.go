package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// rssPath is the memory runs of one proxy.
type rssPath struct {
	name    string
	process string // which processes were measured
	runs    []rssResult
}

// median returns the run with the median growth per connection.
func (p *rssPath) median() rssResult {
	runs := slices.Clone(p.runs)
	slices.SortFunc(runs, func(a, b rssResult) int { return cmp.Compare(a.perConn(), b.perConn()) })
	return runs[len(runs)/2]
}

// rssResult is the memory a proxy's processes hold for idle connections.
type rssResult struct {
	name          string
	conns         int
	warmup        int
	before, after int64 // KiB, summed VmRSS
	settledBefore bool
	settledAfter  bool
	open          time.Duration // to open and log in all conns
}

// perConn is the RSS growth per connection, in KiB.
func (r rssResult) perConn() float64 { return float64(r.after-r.before) / float64(r.conns) }

// rssOptions says how many connections to hold and how long to wait for
// the RSS to settle.
type rssOptions struct {
	conns, warmup, concurrency int
	settle                     time.Duration
}

// measureRSS opens warmup connections and keeps them, waits for the RSS of
// pids() to settle (before), opens opts.conns more TLS connections that
// each log in and then stay idle, waits again (after), and closes them all.
func measureRSS(ctx context.Context, t target, pids func() []int, opts rssOptions, progress io.Writer) (rssResult, error) {
	res := rssResult{name: t.name, conns: opts.conns, warmup: opts.warmup}
	var held []*imapConn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	warm, _, err := openIdle(ctx, t, opts.warmup, opts.concurrency)
	held = append(held, warm...)
	if err != nil {
		return res, err
	}
	if res.before, res.settledBefore, err = settledRSS(ctx, pids, opts.settle); err != nil {
		return res, err
	}
	fmt.Fprintf(progress, "  %s: %d KiB with %d warm-up connections; opening %d more\n", t.name, res.before, opts.warmup, opts.conns)
	conns, open, err := openIdle(ctx, t, opts.conns, opts.concurrency)
	held = append(held, conns...)
	res.open = open
	if err != nil {
		return res, err
	}
	if res.after, res.settledAfter, err = settledRSS(ctx, pids, opts.settle); err != nil {
		return res, err
	}
	fmt.Fprintf(progress, "  %s: %d KiB with %d connections (opened in %v)\n", t.name, res.after, len(held), open.Round(time.Millisecond))
	return res, nil
}

// openIdle opens n connections to t, at most concurrency at a time, each
// logged in as alice and then left idle. On error it returns the ones it
// opened (to be closed by the caller) and the first error.
func openIdle(ctx context.Context, t target, n, concurrency int) ([]*imapConn, time.Duration, error) {
	var (
		mu     sync.Mutex
		conns  = make([]*imapConn, 0, n)
		first  error
		failed atomic.Bool
		next   atomic.Int64
		wg     sync.WaitGroup
	)
	start := time.Now()
	for range min(concurrency, n) {
		wg.Go(func() {
			for next.Add(1) <= int64(n) && !failed.Load() && ctx.Err() == nil {
				c, err := dialIMAP(ctx, t, 512)
				if err == nil {
					if err = c.login(benchUser, benchPassword); err != nil {
						c.Close()
					}
				}
				mu.Lock()
				if err != nil {
					if first == nil {
						first = err
					}
					failed.Store(true)
				} else {
					c.r, c.line, c.cmd = nil, nil, nil // idle: keep only the connection
					conns = append(conns, c)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	open := time.Since(start)
	if first != nil {
		return conns, open, fmt.Errorf("%s: opening connection %d of %d: %w", t.name, len(conns)+1, n, first)
	}
	if err := ctx.Err(); err != nil {
		return conns, open, err
	}
	return conns, open, nil
}

// settledRSS samples the summed RSS every 250 ms until the last 8 samples
// (2 s) lie within 0.5 % (or 256 KiB) of each other, or until timeout; it
// returns the last sample and whether it settled.
func settledRSS(ctx context.Context, pids func() []int, timeout time.Duration) (int64, bool, error) {
	return settled(ctx, func() (int64, error) { return totalRSS(pids()) }, timeout)
}

// settled is settledRSS for any sample in KiB.
func settled(ctx context.Context, sample func() (int64, error), timeout time.Duration) (int64, bool, error) {
	const window = 8
	deadline := time.Now().Add(timeout)
	var samples []int64
	for {
		kib, err := sample()
		if err != nil {
			return 0, false, err
		}
		samples = append(samples, kib)
		if len(samples) >= window {
			last := samples[len(samples)-window:]
			lo, hi := slices.Min(last), slices.Max(last)
			if hi-lo <= max(256, hi/200) {
				return kib, true, nil
			}
		}
		if time.Now().After(deadline) {
			return kib, false, nil
		}
		select {
		case <-ctx.Done():
			return 0, false, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}
