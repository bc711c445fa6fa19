package admin

import (
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/xapsproxy/xapsproxy/watch"
)

// Watchers is what /metrics reports on: the watch manager.
type Watchers interface {
	Stats() watch.Stats
}

var (
	watchersDesc = prometheus.NewDesc("xapsproxy_watchers",
		"Watchers (one per account with registrations) by state: connecting, watching (logged in, in IDLE), backoff (waiting to retry after a failure), unreachable (waiting for the backend to answer again).",
		[]string{"state"}, nil)
	watchedDesc = prometheus.NewDesc("xapsproxy_watched_accounts",
		"Accounts with registrations by event source (watch.source as resolved: dovecot, auto, notify or idle) and state. With a backend connection per account (auto, notify, idle) the states are the watchers': connecting, watching, backoff (waiting to retry after a failure), unreachable (waiting for the backend to answer again), waiting_for_login (watch.auth = captured: no password until the user logs in). With dovecot: watching, or catching_up (waiting for the catch-up's look).",
		[]string{"source", "state"}, nil)
	greetingTimeoutsDesc = prometheus.NewDesc("xapsproxy_backend_greeting_timeouts_total",
		"Backend connections given up because the backend sent no greeting in time.", nil, nil)
	reconnectsDesc = prometheus.NewDesc("xapsproxy_backend_reconnects_total",
		"Backend connections opened by watchers to replace a failed or lost one.", nil, nil)
	accountsDesc = prometheus.NewDesc("xapsproxy_accounts",
		"Accounts with registrations, whatever the event source (with Dovecot's own events, none has a backend connection).", nil, nil)
	sessionsDesc = prometheus.NewDesc("xapsproxy_backend_sessions",
		"Accounts' backend connections by what they wait with (notify or idle), connecting ones included.", []string{"wait"}, nil)
	catchUpPendingDesc = prometheus.NewDesc("xapsproxy_catchup_pending",
		"Accounts waiting for a catch-up look (Dovecot's own events: after a start, or after hints overflowed).", nil, nil)
	catchUpsDesc = prometheus.NewDesc("xapsproxy_catchups_total",
		"Accounts looked at by the catch-up, by result (ok or failed).", []string{"result"}, nil)
	backendLoginsFailedDesc = prometheus.NewDesc("xapsproxy_backend_login_failures_total",
		"Backend logins of watchers and the catch-up that failed, by kind: refused (for good: a wrong master password or captured password, an unknown user; retried after the longest backoff) or temporary (a temporary NO, a BAD, the connection lost during the login).",
		[]string{"kind"}, nil)
	eventsDesc = prometheus.NewDesc("xapsproxy_events_total",
		"Events reported to the push stage by the accounts' owners, by kind: new (mail arrived, pushed at once) or changed (flags, expunges; pushes coalesced).",
		[]string{"kind"}, nil)
	hintsDesc = prometheus.NewDesc("xapsproxy_hints_total",
		"Hints from the event sources (Dovecot's events, NOTIFY, IDLE), by result: applied (looked at by the account's owner), unregistered_mailbox (about a mailbox no device registered), unwatched_user (about a user with no registrations: with Dovecot's events, every other user, or a name that backend.username_format does not match), overflowed (the owner's queue was full; the account is caught up instead).",
		[]string{"result"}, nil)
)

// watchCollector reads the manager's statistics once per scrape.
type watchCollector struct{ w Watchers }

func (c watchCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{watchersDesc, watchedDesc, greetingTimeoutsDesc, reconnectsDesc, accountsDesc, sessionsDesc, catchUpPendingDesc, catchUpsDesc, backendLoginsFailedDesc, eventsDesc, hintsDesc} {
		ch <- d
	}
}

func (c watchCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.w.Stats()
	for st, n := range s.Watchers {
		ch <- prometheus.MustNewConstMetric(watchersDesc, prometheus.GaugeValue, float64(n), watch.State(st).String())
	}
	c.collectWatched(ch, s)
	ch <- prometheus.MustNewConstMetric(greetingTimeoutsDesc, prometheus.CounterValue, float64(s.GreetingTimeouts))
	ch <- prometheus.MustNewConstMetric(reconnectsDesc, prometheus.CounterValue, float64(s.Reconnects))
	ch <- prometheus.MustNewConstMetric(accountsDesc, prometheus.GaugeValue, float64(s.Owners))
	ch <- prometheus.MustNewConstMetric(sessionsDesc, prometheus.GaugeValue, float64(s.NotifySessions), "notify")
	ch <- prometheus.MustNewConstMetric(sessionsDesc, prometheus.GaugeValue, float64(s.IdleSessions), "idle")
	ch <- prometheus.MustNewConstMetric(catchUpPendingDesc, prometheus.GaugeValue, float64(s.CatchUpPending))
	ch <- prometheus.MustNewConstMetric(catchUpsDesc, prometheus.CounterValue, float64(s.CatchUps), "ok")
	ch <- prometheus.MustNewConstMetric(catchUpsDesc, prometheus.CounterValue, float64(s.CatchUpFailures), "failed")
	ch <- prometheus.MustNewConstMetric(backendLoginsFailedDesc, prometheus.CounterValue, float64(s.LoginsRefused), "refused")
	ch <- prometheus.MustNewConstMetric(backendLoginsFailedDesc, prometheus.CounterValue, float64(s.LoginsFailed), "temporary")
	ch <- prometheus.MustNewConstMetric(eventsDesc, prometheus.CounterValue, float64(s.EventsNew), "new")
	ch <- prometheus.MustNewConstMetric(eventsDesc, prometheus.CounterValue, float64(s.EventsChanged), "changed")
	for result, n := range map[string]uint64{"applied": s.Hints, "unregistered_mailbox": s.HintsUnregistered,
		"unwatched_user": s.HintsUnwatched, "overflowed": s.HintsOverflowed} {
		ch <- prometheus.MustNewConstMetric(hintsDesc, prometheus.CounterValue, float64(n), result)
	}
}

// collectWatched sends xapsproxy_watched_accounts: xapsproxy_watchers with
// the source, kept apart so that xapsproxy_watchers keeps its labels.
func (c watchCollector) collectWatched(ch chan<- prometheus.Metric, s watch.Stats) {
	gauge := func(n int, state string) {
		ch <- prometheus.MustNewConstMetric(watchedDesc, prometheus.GaugeValue, float64(n), s.Source, state)
	}
	if s.Source == watch.SourceEvents {
		gauge(max(s.Owners-s.CatchUpPending, 0), "watching")
		gauge(s.CatchUpPending, "catching_up")
		return
	}
	for st, n := range s.Watchers {
		gauge(n, strings.ReplaceAll(watch.State(st).String(), " ", "_"))
	}
}
