package admin

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/xapsproxy/xapsproxy/dovecot"
)

// Events is what /metrics reports on: the handler of Dovecot's own events.
type Events interface {
	Stats() dovecot.Stats
}

var dovecotRequestsDesc = prometheus.NewDesc("xapsproxy_dovecot_requests_total",
	"Requests to the events listener (one per Dovecot mailbox transaction), by result: accepted, refused (no or a wrong bearer secret: events.secret and Dovecot's xapsproxy_secret differ), malformed (a bad path, method, body or event).",
	[]string{"result"}, nil)

type eventsCollector struct{ e Events }

func (c eventsCollector) Describe(ch chan<- *prometheus.Desc) { ch <- dovecotRequestsDesc }

func (c eventsCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.e.Stats()
	for result, n := range map[string]uint64{"accepted": s.Accepted, "refused": s.Unauthorized, "malformed": s.Refused} {
		ch <- prometheus.MustNewConstMetric(dovecotRequestsDesc, prometheus.CounterValue, float64(n), result)
	}
}
