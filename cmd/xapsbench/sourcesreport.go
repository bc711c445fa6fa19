package main

import (
	"fmt"
	"strings"
	"time"
)

// errors counts what went wrong: deliveries without their push, malformed
// pushes.
func (res *sourcesResults) errors() int {
	n := 0
	for _, run := range res.runs {
		n += len(run.deliveries.missing) + len(run.deliveries.problems)
	}
	return n
}

// msQuantiles is p50, p90, p99 and max of sorted d in ms, or dashes.
func msQuantiles(d []time.Duration) [4]string {
	if len(d) == 0 {
		return [4]string{"-", "-", "-", "-"}
	}
	f := func(d time.Duration) string { return fmt.Sprintf("%.1f", ms(d)) }
	return [4]string{f(percentile(d, 50)), f(percentile(d, 90)), f(percentile(d, 99)), f(d[len(d)-1])}
}

// latency formats a push latency for the verdicts: ms below a second.
func latency(d time.Duration) string {
	if d < time.Second && d > -time.Second {
		return fmt.Sprintf("%.1f ms", ms(d))
	}
	return fmt.Sprintf("%.1f s", d.Seconds())
}

func printSources(r *report, env *environment, s sourcesSettings, res *sourcesResults) {
	r.f("xapsbench sources: what each event source costs, and how fast it pushes")
	env.print(r)
	as := "ourselves (not root)"
	if res.dovecotUser != "" {
		as = res.dovecotUser + " (-dovecot-user; per-user limits such as inotify instances count for it alone)"
	}
	r.f("dovecot as:   %s", as)
	sysctl := fmt.Sprintf("%d (the system's setting, left alone)", res.inotifyLimit)
	if res.inotifyWas > 0 {
		sysctl = fmt.Sprintf("%d for the run (-inotify-instances; %d before and after)", res.inotifyLimit, res.inotifyWas)
	}
	r.f("inotify:      fs.inotify.max_user_instances = %s: each Dovecot IMAP session watching a mailbox takes one", sysctl)
	r.f("              instance; a session beyond the limit logs \"Inotify instance limit ... exceeded\" and looks every 30 s")
	r.f("setup:        per source a Dovecot of its own with %d users (service imap process_limit and default_client_limit", s.accounts)
	r.f("              raised for them, Notes in every account), each with one device registered through xapsproxy for INBOX")
	r.f("              and Notes as iPhone Mail registers; pushes go to a fake APNs in the bench (HTTP/2, client certificate)")
	r.f("deliveries:   %d to INBOX and %d to Notes per source, over LMTP (Notes: rcpt user+Notes@, lmtp_save_to_detail_mailbox),", s.deliveries, s.deliveries)
	r.f("              each to another random account, at random moments over the window, over %d kept LMTP connections", lmtpSenders)
	r.f("latency:      from the LMTP server's reply to the end of DATA to the APNs request arriving at the fake APNs")
	r.f("              (negative: the push left before Dovecot answered the MTA, which Dovecot's events make possible)")
	r.f("xapsproxy:    watch.poll_interval %v (the IDLE sources; xapsproxy's default is 2m), watch.catchup_rate %d", s.pollInterval, catchUpRate)
	r.f("memory:       xapsproxy with no account (the baseline, same run and configuration), then a fresh process on the")
	r.f("              same store once every account is watched: VmRSS settled (within 0.5%% for 2 s, at most %v), Go", s.settle)
	r.f("              heap and stacks in use and goroutines from its /metrics; Dovecot: all its processes, VmRSS and Pss")
	for _, run := range res.runs {
		r.f("")
		printSourceRun(r, run)
	}
	if len(res.runs) > 1 {
		r.f("")
		printSourceSummary(r, res.runs)
	}
	if h := res.hook; h != nil {
		r.f("")
		printHook(r, h)
	}
	if len(res.memory) > 0 {
		r.f("")
		printMemoryRuns(r, res.memory)
	}
	r.f("")
	printSourceGoals(r, s, res)
	r.f("")
	r.f("took %.1f min; rerun: %s   (from the repository root; -h for the knobs)", res.took.Minutes(), env.command)
}

func printSourceRun(r *report, run *sourceRun) {
	k, d := run.kind, run.deliveries
	r.f("%s: %s", k.name, k.what)
	catchUp := ""
	if k.events {
		catchUp = fmt.Sprintf(" (its catch-up included: %.0f accounts looked at, %.0f failed)", run.catchUps[0], run.catchUps[1])
	}
	r.f("  %d devices registered through xapsproxy in %.1f s; a fresh xapsproxy watched every account %.2f s after its exec%s",
		run.accounts, run.register.Seconds(), run.watched.Seconds(), catchUp)
	r.f("  %-34s %8s %8s %8s %8s %9s", fmt.Sprintf("delivery -> APNs request, ms (over %v)", d.window.Round(100*time.Millisecond)), "p50", "p90", "p99", "max", "pushed")
	for _, mb := range []string{"INBOX", "Notes"} {
		q := msQuantiles(d.push[mb])
		r.f("  %-34s %8s %8s %8s %8s %9s", "  "+mb, q[0], q[1], q[2], q[3], fmt.Sprintf("%d/%d", len(d.push[mb]), d.sent[mb]))
	}
	l := msQuantiles(d.lmtp)
	r.f("  LMTP deliveries themselves (MAIL FROM -> DATA reply): p50 %s, p99 %s, max %s ms", l[0], l[2], l[3])
	r.f("  fake APNs: %d request(s) over %d connection(s); %d push(es) matching no delivery", d.requests, d.conns, d.extra)
	if len(d.missing) > 0 {
		r.f("  ERRORS: %d deliveries without a push within %v of the last delivery: %s", len(d.missing), d.wait, firstFew(d.missing, 8))
	}
	for i, p := range d.problems {
		if i == 5 {
			r.f("  ... and %d more malformed", len(d.problems)-i)
			break
		}
		r.f("  ERROR: malformed push: %s", p)
	}
	b, x := run.base, run.loaded
	rss, heap, g := x.perAccount(b, run.accounts)
	r.f("  xapsproxy: RSS %.1f MiB, %.0f goroutines with no account; %.1f MiB, %.0f goroutines with %d watched (backend sessions: %.0f NOTIFY, %.0f IDLE)",
		mibs(b.rss), b.goroutines, mibs(x.rss), x.goroutines, run.accounts, run.sessions[0], run.sessions[1])
	r.f("             per account: RSS %+.1f KiB, Go heap+stacks %+.1f KiB, %+.2f goroutines%s", rss, heap, g, unsettled(b, x))
	dv := run.dovecot
	r.f("  Dovecot with every account watched: %d processes (%s)", dv.procs, dv.names())
	r.f("           RSS %.1f MiB, PSS %.1f MiB, of which imap and imap-hibernate %.1f MiB (%.1f KiB per account);",
		mibs(dv.rss), mibs(dv.pss), mibs(dv.sessionPss()), float64(dv.sessionPss())/float64(run.accounts))
	hibernated := ""
	if k.hibernate {
		hibernated = fmt.Sprintf(", %d of them hibernated", max(run.dovecotIMAP-dv.byName["imap"], 0))
	}
	r.f("           %d IMAP sessions (doveadm who)%s; %d inotify instances", run.dovecotIMAP, hibernated, dv.inotify)
	if len(run.warnings) == 0 {
		r.f("  Dovecot's log: no warnings or errors")
		return
	}
	r.f("  Dovecot's warnings and errors:")
	for _, w := range run.warnings[:min(len(run.warnings), 6)] {
		r.f("  %s", w)
	}
}

func unsettled(samples ...proxySample) string {
	for _, s := range samples {
		if !s.settled {
			return " (an RSS had not settled)"
		}
	}
	return ""
}

func firstFew(s []string, n int) string {
	if len(s) <= n {
		return strings.Join(s, ", ")
	}
	return strings.Join(s[:n], ", ") + fmt.Sprintf(", ... (%d more)", len(s)-n)
}

func printSourceSummary(r *report, runs []*sourceRun) {
	r.f("Side by side, %d accounts each", runs[0].accounts)
	row := func(label string, cell func(*sourceRun) string) {
		cells := []string{fmt.Sprintf("  %-40s", label)}
		for _, run := range runs {
			cells = append(cells, fmt.Sprintf(" %16s", cell(run)))
		}
		r.f("%s", strings.Join(cells, ""))
	}
	row("", func(run *sourceRun) string { return run.kind.name })
	for _, mb := range []string{"INBOX", "Notes"} {
		row(mb+": delivery -> push p50 / p99, ms", func(run *sourceRun) string {
			q := msQuantiles(run.deliveries.push[mb])
			return q[0] + " / " + q[2]
		})
	}
	row("Dovecot IMAP sessions per account", func(run *sourceRun) string {
		return fmt.Sprintf("%.2f", float64(run.dovecotIMAP)/float64(run.accounts))
	})
	row("Dovecot processes", func(run *sourceRun) string { return fmt.Sprint(run.dovecot.procs) })
	row("Dovecot PSS, MiB (RSS)", func(run *sourceRun) string {
		return fmt.Sprintf("%.0f (%.0f)", mibs(run.dovecot.pss), mibs(run.dovecot.rss))
	})
	row("Dovecot imap processes' PSS per account, KiB", func(run *sourceRun) string {
		return fmt.Sprintf("%.0f", float64(run.dovecot.sessionPss())/float64(run.accounts))
	})
	row("Dovecot inotify instances", func(run *sourceRun) string { return fmt.Sprint(run.dovecot.inotify) })
	row("xapsproxy RSS per account, KiB", func(run *sourceRun) string {
		rss, _, _ := run.loaded.perAccount(run.base, run.accounts)
		return fmt.Sprintf("%.1f", rss)
	})
	row("xapsproxy goroutines per account", func(run *sourceRun) string {
		_, _, g := run.loaded.perAccount(run.base, run.accounts)
		return fmt.Sprintf("%.2f", g)
	})
	row("LMTP delivery p50, ms", func(run *sourceRun) string { return msQuantiles(run.deliveries.lmtp)[0] })
	r.f("  (xapsproxy per account at this size: what one start costs (the catch-up's logins, the registrations' TLS)")
	r.f("  weighs in; the memory runs at scale below give the cost per account)")
}

func printHook(r *report, h *hookResult) {
	r.f("Dovecot's events hook: LMTP deliveries (MAIL FROM -> DATA reply), %d with the hook on (posting to the running", len(h.on))
	r.f("xapsproxy) and %d to a Dovecot without it, in turns, to the same %d accounts, one at a time, ms", len(h.off), h.accounts)
	r.f("  %-28s %8s %8s %8s %8s", "", "p50", "p90", "p99", "max")
	off, on := msQuantiles(h.off), msQuantiles(h.on)
	r.f("  %-28s %8s %8s %8s %8s", "hook off", off[0], off[1], off[2], off[3])
	r.f("  %-28s %8s %8s %8s %8s", "hook on", on[0], on[1], on[2], on[3])
	d := func(p float64) string { return fmt.Sprintf("%+.2f", ms(percentile(h.on, p)-percentile(h.off, p))) }
	r.f("  %-28s %8s %8s %8s   (p50 %.2fx)", "added by the hook", d(50), d(90), d(99), ms(percentile(h.on, 50))/ms(percentile(h.off, 50)))
	r.f("  (a pair every %v at most; the hook's cost against an in-process handler, without xapsproxy's work beside it:", hookPace)
	r.f("  go test -run XXX -bench LMTPDelivery -benchtime 1000x ./dovecot)")
}

func printMemoryRuns(r *report, runs []memRun) {
	r.f("xapsproxy's memory at scale: registrations (INBOX and Notes) stored beforehand, backend a fake IMAP server in the bench")
	r.f("that offers NOTIFY and IDLE and then stays silent (so no Dovecot limit applies); baseline: the same configuration")
	r.f("with no account, in the same run")
	r.f("  %-9s %9s %12s %8s %18s %10s %10s %10s %11s", "", "", "", "", "", "per account:", "", "", "")
	r.f("  %-9s %9s %12s %8s %18s %10s %10s %10s %11s", "source", "accounts", "connections", "load, s", "RSS MiB 0 -> N", "RSS KiB", "heap KiB", "stack KiB", "goroutines")
	for _, m := range runs {
		row := func(label string, at proxySample) {
			rss, _, g := at.perAccount(m.base, m.accounts)
			per := func(a, b float64) float64 { return (a - b) / 1024 / float64(m.accounts) }
			r.f("  %-9s %9d %12d %8.1f %18s %10.2f %10.2f %10.2f %11.2f%s", label, m.accounts, m.fakeConns, m.load.Seconds(),
				fmt.Sprintf("%.1f -> %.1f", mibs(m.base.rss), mibs(at.rss)), rss, per(at.heap, m.base.heap),
				per(at.stacks, m.base.stacks), g, unsettled(m.base, at))
		}
		row(m.kind.name, m.loaded)
		if m.afterGC != nil {
			row("  +GC", *m.afterGC)
		}
	}
	r.f("  (per account: growth over the baseline divided by the accounts; heap: in-use heap spans, live data and the garbage")
	r.f("  of the start, which the runtime lets grow to twice the live heap (GOGC=100) before it collects; load: exec to")
	r.f("  every account watched, with Dovecot's events every account looked at once by the catch-up, at catchup_rate %d;", memCatchUpRate)
	r.f("  +GC: the same process after its next garbage collection, which the runtime forces after 2 idle minutes, with -after-gc)")
}

// printSourceGoals gives a verdict per goal.
func printSourceGoals(r *report, s sourcesSettings, res *sourcesResults) {
	r.f("Goals")
	goal := func(name string, met bool, how string) {
		verdict := "not met"
		if met {
			verdict = "met"
		}
		r.f("  %-58s %-8s %s", name, verdict+":", how)
	}
	memory := func(kind string) (float64, string, bool) {
		for _, m := range res.memory {
			if m.kind.name != kind {
				continue
			}
			rss, _, _ := m.loaded.perAccount(m.base, m.accounts)
			at := fmt.Sprintf("at %d accounts", m.accounts)
			if m.afterGC != nil {
				gc, _, _ := m.afterGC.perAccount(m.base, m.accounts)
				return max(rss, gc), fmt.Sprintf("%s (%.2f once watched, %.2f after the next GC: the higher)", at, rss, gc), true
			}
			return rss, at, true
		}
		for _, run := range res.runs {
			if run.kind.name == kind {
				rss, _, _ := run.loaded.perAccount(run.base, run.accounts)
				return rss, fmt.Sprintf("at %d accounts (no memory run)", run.accounts), true
			}
		}
		return 0, "", false
	}
	for _, run := range res.runs {
		d, name := run.deliveries, run.kind.name
		all := func(mb string) bool { return len(d.push[mb]) == d.sent[mb] }
		switch {
		case run.kind.events:
			for _, mb := range []string{"INBOX", "Notes"} {
				p50, p99 := percentile(d.push[mb], 50), percentile(d.push[mb], 99)
				goal(fmt.Sprintf("%s: %s push p50 <= 2 ms, p99 <= 10 ms", name, mb), all(mb) && p50 <= 2*time.Millisecond && p99 <= 10*time.Millisecond,
					fmt.Sprintf("p50 %s, p99 %s, %d/%d pushed", latency(p50), latency(p99), len(d.push[mb]), d.sent[mb]))
			}
			goal(name+": no backend connection per account", run.dovecotIMAP == 0 && run.sessions == [2]float64{},
				fmt.Sprintf("%d Dovecot IMAP sessions, %.0f xapsproxy backend sessions with %d accounts watched", run.dovecotIMAP, run.sessions[0]+run.sessions[1], run.accounts))
		default:
			p50, p99 := percentile(d.push["Notes"], 50), percentile(d.push["Notes"], 99)
			how := fmt.Sprintf("p50 %s, p99 %s, %d/%d pushed", latency(p50), latency(p99), len(d.push["Notes"]), d.sent["Notes"])
			if run.kind.idle() {
				how += fmt.Sprintf(" (Notes is polled every %v)", s.pollInterval)
			}
			goal(name+": Notes push p99 <= 1 s", all("Notes") && p99 <= time.Second, how)
		}
	}
	for _, g := range []struct {
		kind string
		kib  float64
	}{{"dovecot", 2}, {"notify", 16}, {"idle", 16}} {
		if kib, at, ok := memory(g.kind); ok {
			goal(fmt.Sprintf("%s: <= %.0f KiB xapsproxy memory per account", g.kind, g.kib), kib <= g.kib, fmt.Sprintf("%.2f KiB RSS per account %s", kib, at))
		}
	}
	if h := res.hook; h != nil {
		added := percentile(h.on, 50) - percentile(h.off, 50)
		goal("the hook adds <= 2 ms p50 to a delivery", added <= 2*time.Millisecond, fmt.Sprintf("%+.2f ms (p50 %.2f ms on, %.2f off)", ms(added), ms(percentile(h.on, 50)), ms(percentile(h.off, 50))))
	}
}

func mibs(kib int64) float64 { return float64(kib) / 1024 }
