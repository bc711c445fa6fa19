package admin

import (
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
)

// watchCollector reads the manager's statistics once per scrape.
type watchCollector struct{ w Watchers }

func (c watchCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{watchersDesc, greetingTimeoutsDesc, reconnectsDesc, accountsDesc, sessionsDesc, catchUpPendingDesc, catchUpsDesc} {
		ch <- d
	}
}

func (c watchCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.w.Stats()
	for st, n := range s.Watchers {
		ch <- prometheus.MustNewConstMetric(watchersDesc, prometheus.GaugeValue, float64(n), watch.State(st).String())
	}
	ch <- prometheus.MustNewConstMetric(greetingTimeoutsDesc, prometheus.CounterValue, float64(s.GreetingTimeouts))
	ch <- prometheus.MustNewConstMetric(reconnectsDesc, prometheus.CounterValue, float64(s.Reconnects))
	ch <- prometheus.MustNewConstMetric(accountsDesc, prometheus.GaugeValue, float64(s.Owners))
	ch <- prometheus.MustNewConstMetric(sessionsDesc, prometheus.GaugeValue, float64(s.NotifySessions), "notify")
	ch <- prometheus.MustNewConstMetric(sessionsDesc, prometheus.GaugeValue, float64(s.IdleSessions), "idle")
	ch <- prometheus.MustNewConstMetric(catchUpPendingDesc, prometheus.GaugeValue, float64(s.CatchUpPending))
	ch <- prometheus.MustNewConstMetric(catchUpsDesc, prometheus.CounterValue, float64(s.CatchUps), "ok")
	ch <- prometheus.MustNewConstMetric(catchUpsDesc, prometheus.CounterValue, float64(s.CatchUpFailures), "failed")
}
