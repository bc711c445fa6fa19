package main

import (
	"context"
	"fmt"
	"hash/crc32"
	"io"
	"slices"
	"time"
)

// throughputResult is bulk FETCH of the whole mailbox over one path.
type throughputResult struct {
	name     string
	bytes    int64 // literal bytes per run
	literals int
	crc      uint32 // CRC-32C of all literal bytes (warm-up run)
	runs     []time.Duration
}

// median returns the median run time.
func (r throughputResult) median() time.Duration {
	d := slices.Clone(r.runs)
	slices.Sort(d)
	return d[len(d)/2]
}

// mbps is throughput in MB/s (10^6 bytes) for run time d.
func (r throughputResult) mbps(d time.Duration) float64 {
	return float64(r.bytes) / d.Seconds() / 1e6
}

// measureThroughput fetches every message's BODY[] on each target: one
// unmeasured warm-up run that checksums the bytes (every path must deliver
// the same bytes), then runs measured rounds, the targets taking turns
// within each round so that drift affects them alike. Each path keeps one
// logged-in connection for all its runs.
func measureThroughput(ctx context.Context, targets []target, runs int, progress io.Writer) ([]throughputResult, error) {
	conns := make([]*imapConn, len(targets))
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	results := make([]throughputResult, len(targets))
	const fetch = "UID FETCH 1:* BODY.PEEK[]"
	for i, t := range targets {
		c, err := openMailbox(ctx, t)
		if err != nil {
			return nil, err
		}
		conns[i] = c
		h := crc32.New(crc32.MakeTable(crc32.Castagnoli))
		res, err := c.run(fetch, h)
		if err != nil {
			return nil, fmt.Errorf("%s: warm-up: %w", t.name, err)
		}
		results[i] = throughputResult{name: t.name, bytes: res.literalBytes, literals: res.literals, crc: h.Sum32()}
		if results[i].bytes != results[0].bytes || results[i].crc != results[0].crc || results[i].literals != results[0].literals {
			return nil, fmt.Errorf("%s delivered %d literals, %d bytes (CRC-32C %08x); %s delivered %d, %d bytes (%08x)",
				t.name, results[i].literals, results[i].bytes, results[i].crc,
				targets[0].name, results[0].literals, results[0].bytes, results[0].crc)
		}
	}
	for r := range runs {
		fmt.Fprintf(progress, "  throughput round %d/%d\n", r+1, runs)
		for i, c := range conns {
			start := time.Now()
			res, err := c.run(fetch, nil)
			d := time.Since(start)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", targets[i].name, err)
			}
			if res.literalBytes != results[i].bytes {
				return nil, fmt.Errorf("%s: run %d fetched %d bytes, the warm-up %d", targets[i].name, r+1, res.literalBytes, results[i].bytes)
			}
			results[i].runs = append(results[i].runs, d)
		}
	}
	return results, nil
}

// openMailbox connects to t, logs in as alice and examines INBOX, with a
// deadline generous enough for a whole measurement phase.
func openMailbox(ctx context.Context, t target) (*imapConn, error) {
	c, err := dialIMAP(ctx, t, 64<<10)
	if err != nil {
		return nil, err
	}
	err = c.deadline(ctx, 10*time.Minute)
	if err == nil {
		err = c.login(benchUser, benchPassword)
	}
	if err == nil {
		_, err = c.run("EXAMINE INBOX", nil)
	}
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("%s: %w", t.name, err)
	}
	return c, nil
}
