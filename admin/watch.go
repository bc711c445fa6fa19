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
)

// watchCollector reads the manager's statistics once per scrape.
type watchCollector struct{ w Watchers }

func (c watchCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- watchersDesc
	ch <- greetingTimeoutsDesc
	ch <- reconnectsDesc
}

func (c watchCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.w.Stats()
	for st, n := range s.Watchers {
		ch <- prometheus.MustNewConstMetric(watchersDesc, prometheus.GaugeValue, float64(n), watch.State(st).String())
	}
	ch <- prometheus.MustNewConstMetric(greetingTimeoutsDesc, prometheus.CounterValue, float64(s.GreetingTimeouts))
	ch <- prometheus.MustNewConstMetric(reconnectsDesc, prometheus.CounterValue, float64(s.Reconnects))
}
