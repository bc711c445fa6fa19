package admin

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/xapsproxy/xapsproxy/store"
)

// countTimeout bounds the store's counts at each scrape; when it passes,
// the scrape goes without them.
const countTimeout = 2 * time.Second

var (
	devicesDesc = prometheus.NewDesc("xapsproxy_registered_devices",
		"Registrations stored: one per account and device (counted in the store at the scrape; absent when the store did not answer in time).", nil, nil)
	accountsRegisteredDesc = prometheus.NewDesc("xapsproxy_registered_accounts",
		"Accounts (users) with at least one registration stored.", nil, nil)
	outboxDesc = prometheus.NewDesc("xapsproxy_outbox",
		"Pushes owed: outbox entries committed with the mail that caused them and not yet answered by APNs (counted in the store at the scrape). It stays high while APNs is unreachable or refuses the credential.", nil, nil)
)

type storeCollector struct{ st store.Store }

func (c storeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- devicesDesc
	ch <- accountsRegisteredDesc
	ch <- outboxDesc
}

func (c storeCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), countTimeout)
	defer cancel()
	n, err := c.st.Counts(ctx)
	if err != nil {
		return
	}
	ch <- prometheus.MustNewConstMetric(devicesDesc, prometheus.GaugeValue, float64(n.Registrations))
	ch <- prometheus.MustNewConstMetric(accountsRegisteredDesc, prometheus.GaugeValue, float64(n.Users))
	ch <- prometheus.MustNewConstMetric(outboxDesc, prometheus.GaugeValue, float64(n.Outbox))
}
