package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"path/filepath"

	"github.com/xapsproxy/xapsproxy/internal/dovecotrun"
)

// bench is one run's setup, shared by its phases.
type bench struct {
	s         settings
	res       *results
	dir       string
	xb        *xapsproxyBuild
	ngx       *nginxInstall // nil: nginx is not measured
	clientTLS *tls.Config
	progress  io.Writer
}

// nginxOptions is an nginx in dir/name in front of backend.
func (b *bench) nginxOptions(name, backend string, maxConns int) nginxOptions {
	return nginxOptions{dir: filepath.Join(b.dir, name), backend: backend, workers: b.s.nginxWorkers,
		proxyBuffer: b.s.nginxProxyBuffer, maxConns: maxConns, pki: b.xb.pki, clientTLS: b.clientTLS}
}

// dovecotPhases runs the phases in front of Dovecot (bulk, latency, push)
// with one xapsproxy process, which pushes to a fake APNs in the bench when
// the push phase runs.
func (b *bench) dovecotPhases(ctx context.Context, dc *dovecotrun.Instance) error {
	var endpoint apnsEndpoint
	var apns *fakeAPNs
	if b.s.wants("push") {
		var err error
		if apns, err = startFakeAPNs(b.xb.pki); err != nil {
			return err
		}
		defer apns.Close() // after xapsproxy has stopped
		endpoint = apns.endpoint(b.xb.pki)
	}
	x, err := b.xb.start(ctx, "xapsproxy-dovecot", instance{backend: dc.IMAPAddr, apns: endpoint})
	if err != nil {
		return err
	}
	defer x.stop()
	if b.s.wants("bulk") || b.s.wants("latency") {
		if err := b.bulkAndLatency(ctx, dc.IMAPAddr, x); err != nil {
			return err
		}
	}
	if b.s.wants("push") {
		if b.res.push, err = measurePush(ctx, b, dc, x, apns, b.s.pushes); err != nil {
			return err
		}
	}
	return nil
}

// bulkAndLatency measures the three paths to Dovecot.
func (b *bench) bulkAndLatency(ctx context.Context, dovecot string, x *proxyProc) error {
	s, res, progress := b.s, b.res, b.progress
	targets := []target{{name: "direct", addr: dovecot}}
	targets = append(targets, target{name: "xapsproxy", addr: x.addr, tls: b.clientTLS})
	var err error
	if b.ngx != nil {
		ng, err := startNginx(ctx, b.ngx, b.nginxOptions("nginx-dovecot", dovecot, 64))
		if err != nil {
			return err
		}
		defer ng.close()
		res.nginxNote = ng.describe() + ", ssl_protocols TLSv1.2 TLSv1.3 with OpenSSL's default ciphers, auth_http answered by the bench"
		targets = append(targets, target{name: "nginx", addr: ng.addr, tls: b.clientTLS})
	}

	for _, t := range targets {
		c, err := dialIMAP(ctx, t, 4096)
		if err != nil {
			return err
		}
		res.paths = append(res.paths, pathInfo{name: t.name, tls: c.tlsSummary()})
		c.Close()
	}
	fmt.Fprintf(progress, "filling alice's INBOX: %d messages of %d bytes, APPENDed directly to Dovecot\n", s.messages, s.messageSize)
	if res.mailbox, err = fillMailbox(ctx, targets[0], s.messages, s.messageSize); err != nil {
		return fmt.Errorf("filling the mailbox: %w", err)
	}
	if s.wants("bulk") {
		fmt.Fprintf(progress, "bulk FETCH: warm-up and %d runs per path\n", s.runs)
		if res.throughput, err = measureThroughput(ctx, targets, s.runs, progress); err != nil {
			return err
		}
	}
	if s.wants("latency") {
		fmt.Fprintf(progress, "round trips: %d NOOPs and %d FETCHes per path\n", s.ops, s.ops)
		if res.latency, err = measureLatency(ctx, targets, s.ops, s.messages, progress); err != nil {
			return err
		}
	}
	return nil
}

// memory measures per-connection RSS of fresh xapsproxy (and nginx)
// processes in front of the in-memory backend, s.memRuns times each, the
// two taking turns.
func (b *bench) memory(ctx context.Context) error {
	s := b.s
	opts := rssOptions{conns: s.conns, warmup: s.warmup, concurrency: s.concurrency, settle: s.settle}
	x := &rssPath{name: "xapsproxy", process: "xapsproxy"}
	b.res.rss = append(b.res.rss, x)
	var ng *rssPath
	if b.ngx != nil {
		ng = &rssPath{name: "nginx"}
		b.res.rss = append(b.res.rss, ng)
	}
	for run := 1; run <= s.memRuns; run++ {
		fmt.Fprintf(b.progress, "memory, run %d/%d: xapsproxy with %d idle TLS connections\n", run, s.memRuns, s.conns)
		m, err := b.memoryRun(ctx, opts, func(backend string) (target, func() []int, func(), error) {
			p, err := b.xb.start(ctx, fmt.Sprintf("xapsproxy-mem%d", run), instance{backend: backend})
			if err != nil {
				return target{}, nil, nil, err
			}
			return target{name: "xapsproxy", addr: p.addr, tls: b.clientTLS}, func() []int { return []int{p.pid()} }, p.stop, nil
		})
		if err != nil {
			return err
		}
		x.runs = append(x.runs, m)
		if ng == nil {
			continue
		}
		fmt.Fprintf(b.progress, "memory, run %d/%d: nginx with %d idle TLS connections\n", run, s.memRuns, s.conns)
		m, err = b.memoryRun(ctx, opts, func(backend string) (target, func() []int, func(), error) {
			p, err := startNginx(ctx, b.ngx, b.nginxOptions(fmt.Sprintf("nginx-mem%d", run), backend, s.conns+s.warmup))
			if err != nil {
				return target{}, nil, nil, err
			}
			ng.process = fmt.Sprintf("nginx master + %d worker(s)", len(p.pids())-1)
			return target{name: "nginx", addr: p.addr, tls: b.clientTLS}, p.pids, p.close, nil
		})
		if err != nil {
			return err
		}
		ng.runs = append(ng.runs, m)
	}
	return nil
}

// memoryRun starts a fresh in-memory backend (a fresh port, so that the
// TIME_WAIT sockets of earlier runs are no concern) and a fresh proxy in
// front of it, measures, and stops both.
func (b *bench) memoryRun(ctx context.Context, opts rssOptions,
	start func(backend string) (target, func() []int, func(), error)) (rssResult, error) {
	mem, err := startMemBackend()
	if err != nil {
		return rssResult{}, err
	}
	defer mem.Close()
	t, pids, stop, err := start(mem.addr())
	if err != nil {
		return rssResult{}, err
	}
	defer stop()
	return measureRSS(ctx, t, pids, opts, b.progress)
}
