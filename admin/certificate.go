package admin

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Certificate is one certificate whose expiry /metrics shows and /readyz
// checks.
type Certificate struct {
	// Name is the value of the certificate label: "apns" (the APNs client
	// certificate) or "proxy" (the one clients see).
	Name string
	// NotAfter returns the current certificate's expiry; it is called at
	// every scrape, so a certificate reloaded meanwhile is the one shown.
	// A zero time leaves the series out.
	NotAfter func() time.Time
}

var certExpiryDesc = prometheus.NewDesc("xapsproxy_certificate_expiry_timestamp_seconds",
	"When a certificate expires (its NotAfter, Unix seconds), by certificate: apns (the APNs client certificate; absent with a token key) or proxy (the one clients see, read again on SIGHUP).",
	[]string{"certificate"}, nil)

type certCollector []Certificate

func (c certCollector) Describe(ch chan<- *prometheus.Desc) { ch <- certExpiryDesc }

func (c certCollector) Collect(ch chan<- prometheus.Metric) {
	for _, cert := range c {
		if t := cert.NotAfter(); !t.IsZero() {
			ch <- prometheus.MustNewConstMetric(certExpiryDesc, prometheus.GaugeValue, float64(t.Unix()), cert.Name)
		}
	}
}
