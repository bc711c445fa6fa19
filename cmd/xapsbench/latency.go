package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strconv"
	"time"
)

// latencyResult is round trips on one logged-in connection over one path.
type latencyResult struct {
	name         string
	noop, fetch  []time.Duration // sorted
	fetchCommand string
	// p50 of each round, for the noise of the added latency
	roundNoop, roundFetch []time.Duration
}

// percentile returns the p-th percentile (nearest rank) of sorted d.
func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	i := int(p/100*float64(len(d))+0.5) - 1
	return d[min(max(i, 0), len(d)-1)]
}

// latencyRounds splits the round trips of each path into rounds, the paths
// taking turns, so that drift on the machine affects them alike.
const latencyRounds = 10

// measureLatency times ops sequential NOOPs and ops small FETCHes
// (UID FETCH n BODY.PEEK[HEADER], n cycling over the messages) on one
// connection per target, after 100 unmeasured ones of each.
func measureLatency(ctx context.Context, targets []target, ops, messages int, progress io.Writer) ([]latencyResult, error) {
	conns := make([]*imapConn, len(targets))
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	fetches := make([]string, messages)
	for i := range fetches {
		fetches[i] = "UID FETCH " + strconv.Itoa(i+1) + " BODY.PEEK[HEADER]"
	}
	results := make([]latencyResult, len(targets))
	for i, t := range targets {
		c, err := openMailbox(ctx, t)
		if err != nil {
			return nil, err
		}
		conns[i] = c
		results[i] = latencyResult{name: t.name, fetchCommand: "UID FETCH n BODY.PEEK[HEADER]"}
		if _, _, err := roundTrips(c, 100, fetches, nil, nil); err != nil {
			return nil, fmt.Errorf("%s: warm-up: %w", t.name, err)
		}
	}
	per := max(ops/latencyRounds, 1)
	for r := range latencyRounds {
		fmt.Fprintf(progress, "  latency round %d/%d\n", r+1, latencyRounds)
		for i, c := range conns {
			noop, fetch, err := roundTrips(c, per, fetches, nil, nil)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", targets[i].name, err)
			}
			l := &results[i]
			l.noop, l.fetch = append(l.noop, noop...), append(l.fetch, fetch...)
			slices.Sort(noop)
			slices.Sort(fetch)
			l.roundNoop = append(l.roundNoop, percentile(noop, 50))
			l.roundFetch = append(l.roundFetch, percentile(fetch, 50))
		}
	}
	for i := range results {
		slices.Sort(results[i].noop)
		slices.Sort(results[i].fetch)
	}
	return results, nil
}

// roundTrips times n NOOPs, then n FETCHes, appending the times.
func roundTrips(c *imapConn, n int, fetches []string, noop, fetch []time.Duration) ([]time.Duration, []time.Duration, error) {
	for range n {
		start := time.Now()
		if _, err := c.run("NOOP", nil); err != nil {
			return nil, nil, err
		}
		noop = append(noop, time.Since(start))
	}
	for i := range n {
		cmd := fetches[i%len(fetches)]
		start := time.Now()
		res, err := c.run(cmd, nil)
		if err != nil {
			return nil, nil, err
		}
		fetch = append(fetch, time.Since(start))
		if res.literals != 1 {
			return nil, nil, fmt.Errorf("%s: %d literals, want 1", cmd, res.literals)
		}
	}
	return noop, fetch, nil
}
