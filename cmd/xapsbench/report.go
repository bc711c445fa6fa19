package main

import (
	"fmt"
	"time"
)

// results is everything one run measured; absent parts are nil.
type results struct {
	env        *environment
	settings   settings
	mailbox    int64      // bytes appended
	paths      []pathInfo // the paths to Dovecot
	throughput []throughputResult
	latency    []latencyResult
	rss        []*rssPath
	push       *pushResult
	nginxNote  string // how nginx ran
}

// pathInfo is how a path to Dovecot was reached.
type pathInfo struct {
	name string
	tls  string // negotiated TLS, or "plain text"
}

func us(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }

func mib(kib int64) string { return fmt.Sprintf("%.1f MiB", float64(kib)/1024) }

func (res *results) print(r *report) {
	r.f("xapsbench: xapsproxy vs nginx's mail proxy vs Dovecot direct, all on 127.0.0.1")
	res.env.print(r)
	s := res.settings
	r.f("client TLS:   TLS 1.3 only, Go crypto/tls defaults, verifying the bench's CA; both proxies present the same ECDSA P-256 certificate")
	for _, t := range res.paths {
		if t.tls == "plain text" {
			t.tls += " (Dovecot's own listener, ssl = no)"
		}
		r.f("  %-10s  %s", t.name, t.tls)
	}
	if res.nginxNote != "" {
		r.f("nginx setup:  %s", res.nginxNote)
	}
	r.f("")
	if len(res.throughput) > 0 {
		t0 := res.throughput[0]
		r.f("Bulk FETCH: UID FETCH 1:* BODY.PEEK[] of %d messages, %.1f MB of literal data per run", t0.literals, float64(t0.bytes)/1e6)
		r.f("(identical bytes on every path, CRC-32C %08x); median of %d runs; MB = 10^6 bytes", t0.crc, s.runs)
		r.f("  %-10s %10s %17s %10s %9s", "path", "MB/s", "range (MB/s)", "vs direct", "vs nginx")
		direct, ngx := res.find("direct"), res.find("nginx")
		for _, t := range res.throughput {
			mbps := t.mbps(t.median())
			lo, hi := t.mbps(maxDur(t.runs)), t.mbps(minDur(t.runs))
			vsNginx := "-"
			if ngx != nil {
				vsNginx = fmt.Sprintf("%.2fx", mbps/ngx.mbps(ngx.median()))
			}
			r.f("  %-10s %10.1f %8.1f..%-8.1f %9.2fx %9s", t.name, mbps, lo, hi, mbps/direct.mbps(direct.median()), vsNginx)
		}
		r.f("")
	}
	if len(res.latency) > 0 {
		l0 := res.latency[0]
		r.f("Round trips, one logged-in connection per path, %d NOOPs and %d FETCHes (%s) each, in %d rounds", len(l0.noop), len(l0.fetch), l0.fetchCommand, latencyRounds)
		r.f("taking turns; µs; added = p50 through the proxy - p50 direct, with its range over the rounds")
		r.f("  %-10s %8s %8s %9s %9s %20s %20s", "path", "NOOP p50", "p99", "FETCH p50", "p99", "added NOOP", "added FETCH")
		for _, l := range res.latency {
			added := [2]string{"-", "-"}
			if l.name != l0.name {
				added[0] = addedLatency(l.noop, l0.noop, l.roundNoop, l0.roundNoop)
				added[1] = addedLatency(l.fetch, l0.fetch, l.roundFetch, l0.roundFetch)
			}
			r.f("  %-10s %8.1f %8.1f %9.1f %9.1f %20s %20s", l.name,
				us(percentile(l.noop, 50)), us(percentile(l.noop, 99)),
				us(percentile(l.fetch, 50)), us(percentile(l.fetch, 99)), added[0], added[1])
		}
		r.f("  (direct is plain text, so the added latency includes each proxy's TLS work)")
		r.f("")
	}
	if len(res.rss) > 0 {
		x := res.rss[0].runs[0]
		r.f("Memory: %d idle TLS connections, each logged in, on top of %d warm-up connections; a fresh proxy process per run;", x.conns, x.warmup)
		r.f("backend: go-imap in-memory server in the bench; KiB/conn = (RSS after - RSS before) / %d, median of %d run(s)", x.conns, s.memRuns)
		r.f("  %-10s %-28s %11s %11s %9s %13s %10s %s", "path", "processes (VmRSS summed)", "RSS before", "RSS after", "KiB/conn", "range", "opened in", "settled")
		for _, p := range res.rss {
			m := p.median()
			lo, hi := m.perConn(), m.perConn()
			settled := "yes"
			for _, run := range p.runs {
				lo, hi = min(lo, run.perConn()), max(hi, run.perConn())
				if !run.settledBefore || !run.settledAfter {
					settled = fmt.Sprintf("not always within %v", s.settle)
				}
			}
			r.f("  %-10s %-28s %11s %11s %9.1f %13s %10s %s", p.name, p.process, mib(m.before), mib(m.after), m.perConn(),
				fmt.Sprintf("%.1f..%.1f", lo, hi), m.open.Round(10*time.Millisecond), settled)
		}
		r.f("  (a Go process's RSS includes GC headroom: with GOGC=100 the heap may grow to twice its live size between")
		r.f("  collections, so xapsproxy's number depends on where the last GC fell; `go run ./cmd/xapsbench connmem` breaks it down)")
		r.f("")
	}
	if res.push != nil {
		res.push.print(r)
		r.f("")
	}
	res.verdicts(r)
	r.f("")
	r.f("rerun: %s   (from the repository root; -quick for a smoke test, -h for the knobs)", res.env.command)
}

// addedLatency formats p50(proxy) - p50(direct) and its range over the
// rounds, e.g. "+57.7 (44.1..70.2)".
func addedLatency(proxy, direct, proxyRounds, directRounds []time.Duration) string {
	lo, hi := 0.0, 0.0
	for i := range proxyRounds {
		a := us(proxyRounds[i] - directRounds[i])
		if i == 0 {
			lo, hi = a, a
		}
		lo, hi = min(lo, a), max(hi, a)
	}
	return fmt.Sprintf("%+.1f (%.0f..%.0f)", us(percentile(proxy, 50)-percentile(direct, 50)), lo, hi)
}

func (res *results) find(name string) *throughputResult {
	for i := range res.throughput {
		if res.throughput[i].name == name {
			return &res.throughput[i]
		}
	}
	return nil
}

func (res *results) verdicts(r *report) {
	r.f("Goals")
	verdict := func(goal string, met bool, detail string) {
		v := "NOT MET"
		if met {
			v = "MET"
		}
		r.f("  %-36s %-8s %s", goal, v, detail)
	}
	x, ngx := res.find("xapsproxy"), res.find("nginx")
	switch {
	case x == nil:
	case ngx == nil:
		r.f("  %-36s %-8s %s", "throughput >= nginx's", "n/a", "nginx "+res.env.nginx)
	default:
		xm, nm := x.mbps(x.median()), ngx.mbps(ngx.median())
		verdict("throughput >= nginx's", xm >= nm, fmt.Sprintf("xapsproxy %.2fx nginx (%.1f vs %.1f MB/s)", xm/nm, xm, nm))
	}
	var lx, ln, ld *latencyResult
	for i := range res.latency {
		switch res.latency[i].name {
		case "xapsproxy":
			lx = &res.latency[i]
		case "nginx":
			ln = &res.latency[i]
		case "direct":
			ld = &res.latency[i]
		}
	}
	switch {
	case lx == nil || ld == nil:
	case ln == nil:
		r.f("  %-36s %-8s %s", "added p50 latency <= nginx's", "n/a", "nginx "+res.env.nginx)
	default:
		add := func(l *latencyResult, fetch bool) float64 {
			if fetch {
				return us(percentile(l.fetch, 50) - percentile(ld.fetch, 50))
			}
			return us(percentile(l.noop, 50) - percentile(ld.noop, 50))
		}
		xn, nn, xf, nf := add(lx, false), add(ln, false), add(lx, true), add(ln, true)
		verdict("added p50 latency <= nginx's", xn <= nn && xf <= nf,
			fmt.Sprintf("NOOP %+.1f vs %+.1f µs, FETCH %+.1f vs %+.1f µs (xapsproxy vs nginx)", xn, nn, xf, nf))
	}
	var mx, mn *rssResult
	for _, p := range res.rss {
		m := p.median()
		switch p.name {
		case "xapsproxy":
			mx = &m
		case "nginx":
			mn = &m
		}
	}
	if mx != nil {
		detail := fmt.Sprintf("%.1f KiB per connection at %d connections", mx.perConn(), mx.conns)
		if mn != nil {
			detail += fmt.Sprintf(" (nginx %.1f KiB: xapsproxy %.2fx nginx)", mn.perConn(), mx.perConn()/mn.perConn())
		}
		verdict("<= 48 KiB per idle TLS connection", mx.perConn() <= 48, detail)
	}
	if res.push != nil {
		r.f("  %-36s %-8s %s", "delivery -> APNs request (no goal)", "-", res.push.summary())
	}
}

func minDur(d []time.Duration) time.Duration {
	m := d[0]
	for _, v := range d {
		m = min(m, v)
	}
	return m
}

func maxDur(d []time.Duration) time.Duration {
	m := d[0]
	for _, v := range d {
		m = max(m, v)
	}
	return m
}
