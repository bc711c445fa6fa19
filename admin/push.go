package admin

import (
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/xapsproxy/xapsproxy/push"
)

// Pushes is what /metrics reports on: the pusher.
type Pushes interface {
	Stats() push.Stats
}

var (
	pushesDesc = prometheus.NewDesc("xapsproxy_pushes_total",
		`APNs answers to pushes, by HTTP status and APNs reason ("error": no answer, e.g. a timeout or a refused connection). 400 DeviceTokenNotForTopic: the device registered for another topic (kept); 403: the certificate or token was refused.`,
		[]string{"status", "reason"}, nil)
	pushHeldDesc = prometheus.NewDesc("xapsproxy_push_held",
		"1 while every push is held back, by cause: outage (APNs does not answer; one probe at a time) or credential (APNs refused the certificate or token; tried again every minute).",
		[]string{"cause"}, nil)
	pushPendingDesc = prometheus.NewDesc("xapsproxy_push_pending",
		"Pushes waiting, in flight or retrying (registrations), with events not yet looked up and outcomes not yet written.", nil, nil)
	pushWorkersDesc = prometheus.NewDesc("xapsproxy_push_workers",
		"Goroutines sending pushes or waiting for one (at most apns.concurrency; they exit 5 s after the last push).", nil, nil)
)

type pushCollector struct{ p Pushes }

func (c pushCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- pushesDesc
	ch <- pushHeldDesc
	ch <- pushPendingDesc
	ch <- pushWorkersDesc
}

func (c pushCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.p.Stats()
	for answer, n := range s.Answers {
		status, reason, _ := strings.Cut(answer, " ")
		ch <- prometheus.MustNewConstMetric(pushesDesc, prometheus.CounterValue, float64(n), status, reason)
	}
	for _, cause := range []string{"outage", "credential"} {
		v := 0.0
		if s.Held == cause {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(pushHeldDesc, prometheus.GaugeValue, v, cause)
	}
	ch <- prometheus.MustNewConstMetric(pushPendingDesc, prometheus.GaugeValue, float64(s.Pending))
	ch <- prometheus.MustNewConstMetric(pushWorkersDesc, prometheus.GaugeValue, float64(s.Workers))
}

// NewSendLatency returns the histogram of APNs's answer times, for
// push.Options.SendLatency and Options.SendLatency: buckets from 5 ms
// (an answer on a warm connection nearby) to 30 s (push's send timeout).
func NewSendLatency() prometheus.Histogram {
	return prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "xapsproxy_apns_latency_seconds",
		Help:    "Seconds from handing a push to the APNs client to APNs's answer, for every push answered (pushes with no answer count in xapsproxy_pushes_total{status=\"error\"}).",
		Buckets: []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30},
	})
}
