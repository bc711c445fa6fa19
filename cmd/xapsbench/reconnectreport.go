package main

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"
)

func printReconnect(r *report, env *environment, s reconnectSettings, dovecotLog string, warmup reconnectRun, runs []reconnectRun) {
	r.f("xapsbench reconnect: how long until xapsproxy watches all %d registered accounts again", s.accounts)
	env.print(r)
	login := "Dovecot's default (100, also the IMAP listen backlog)"
	if s.loginLimit > 0 {
		login = fmt.Sprintf("%d (-dovecot-login-limit)", s.loginLimit)
	}
	logins := "its default"
	if s.maxLogins > 0 {
		logins = fmt.Sprint(s.maxLogins)
	}
	r.f("setup:        %d Dovecot users, one registration each (INBOX); imap-login process_limit: %s", s.accounts, login)
	r.f("xapsproxy:    built from this tree, its own process; watch.max_concurrent_logins: %s", logins)
	r.f("watched:      xapsproxy_watchers{state=\"watching\"} = %d in xapsproxy's /metrics, polled every %v", s.accounts, metricsPoll)
	r.f("")
	r.f("start:   from exec of `xapsproxy serve` (all accounts stored, Dovecot up) to every account watched")
	down := "started again at once"
	if s.down > 0 {
		down = fmt.Sprintf("started again %v later", s.down)
	}
	r.f("restart: Dovecot SIGKILLed (with all its processes) and %s; from its listeners answering to every account watched", down)
	r.f("xapsproxy CPU: the proxy process's user+system CPU time during the phase, from /proc")
	r.f("  %-7s %8s %8s %9s %9s | %8s %8s %8s %8s %10s %9s", "run", "start", "CPU", "greeting", "sessions", "Dovecot", "restart", "CPU", "greeting", "reconnects", "sessions")
	r.f("  %-7s %8s %8s %9s %9s | %8s %8s %8s %8s %10s %9s", "", "", "", "timeouts", "(Dovecot)", "down", "", "", "timeouts", "", "(Dovecot)")
	w := warmup.start
	r.f("  %-7s %8s %8s %9.0f %9d |", "warm-up", seconds(w.took), seconds(w.cpu), w.greetingTimeouts, w.sessions)
	var starts, restarts []time.Duration
	for i, run := range runs {
		st, rs := run.start, run.restart
		r.f("  %-7d %8s %8s %9.0f %9d | %8s %8s %8s %8.0f %10.0f %9d", i+1, seconds(st.took), seconds(st.cpu), st.greetingTimeouts, st.sessions,
			seconds(run.dovecotRestart), seconds(rs.took), seconds(rs.cpu), rs.greetingTimeouts, rs.reconnects, rs.sessions)
		starts, restarts = append(starts, st.took), append(restarts, rs.took)
	}
	slices.Sort(starts)
	slices.Sort(restarts)
	r.f("  %-7s %8s %8s %9s %9s | %8s %8s", "median", seconds(starts[len(starts)/2]), "", "", "", "", seconds(restarts[len(restarts)/2]))
	r.f("  %-7s %8s %8s %9s %9s | %8s %8s", "max", seconds(starts[len(starts)-1]), "", "", "", "", seconds(restarts[len(restarts)-1]))
	r.f("")
	if warnings := dovecotWarnings(dovecotLog); len(warnings) > 0 {
		r.f("Dovecot's warnings and errors, all runs:")
		for _, w := range warnings[:min(len(warnings), 10)] {
			r.f("  %s", w)
		}
		if len(warnings) > 10 {
			r.f("  ... and %d other kinds", len(warnings)-10)
		}
		r.f("")
	}
	r.f("rerun: %s   (from the repository root; -h for the knobs)", env.command)
}

func seconds(d time.Duration) string { return fmt.Sprintf("%.2f s", d.Seconds()) }

// dovecotWarnings groups the warning, error and fatal lines of Dovecot's
// log by process name and message (without the user, pid and session id),
// with their counts, in order of first appearance.
func dovecotWarnings(log string) []string {
	re := regexp.MustCompile(`^(?:\w{3} +\d+ [\d:]+ )?([\w-]+)(?:\([^)]*\))?(?:<[^>]*>)*: ((?:Warning|Error|Fatal|Panic): .*)$`)
	counts := make(map[string]int)
	var order []string
	for line := range strings.Lines(log) {
		m := re.FindStringSubmatch(strings.TrimSpace(line))
		if m == nil {
			continue
		}
		key := m[1] + ": " + m[2]
		if counts[key] == 0 {
			order = append(order, key)
		}
		counts[key]++
	}
	out := make([]string, len(order))
	for i, k := range order {
		out[i] = fmt.Sprintf("%5d x %s", counts[k], k)
	}
	return out
}
