package admin

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/xapsproxy/xapsproxy/proxy"
)

// Proxy is what /metrics reports on: the client-facing server.
type Proxy interface {
	Stats() proxy.Stats
}

var (
	connectionsDesc = prometheus.NewDesc("xapsproxy_connections",
		"Client connections open now (each has its own backend connection); those refused by the limits are not counted.", nil, nil)
	acceptedDesc = prometheus.NewDesc("xapsproxy_connections_accepted_total",
		"Client connections accepted, by listener (tls: proxy.listen_tls, starttls: proxy.listen_starttls), those then refused by the limits included.",
		[]string{"listener"}, nil)
	connRefusedDesc = prometheus.NewDesc("xapsproxy_connections_refused_total",
		"Client connections turned away, by reason: max_connections (proxy.max_connections) or max_connections_per_ip (proxy.max_connections_per_ip), told with BYE; proxy_protocol (closed: a balancer in proxy.proxy_protocol sent no valid PROXY header in time, or another address sent one).",
		[]string{"reason"}, nil)
	loginsDesc = prometheus.NewDesc("xapsproxy_logins_total",
		"Client LOGIN and AUTHENTICATE commands by result: ok (the backend accepted), failed (the backend refused: a wrong password, mostly), refused (by the proxy, without asking the backend: before STARTTLS, a master-user name, a SASL mechanism it does not take, a malformed command).",
		[]string{"result"}, nil)
	registrationsDesc = prometheus.NewDesc("xapsproxy_registrations_total",
		"XAPPLEPUSHSERVICE registrations by result: ok (stored), bad (malformed, or before login), limit (a new device over the per-account limit), error (the store failed to take it; the device is told to try again).",
		[]string{"result"}, nil)
)

type proxyCollector struct{ p Proxy }

func (c proxyCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{connectionsDesc, acceptedDesc, connRefusedDesc, loginsDesc, registrationsDesc} {
		ch <- d
	}
}

func (c proxyCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.p.Stats()
	counter := func(d *prometheus.Desc, n uint64, label string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(n), label)
	}
	ch <- prometheus.MustNewConstMetric(connectionsDesc, prometheus.GaugeValue, float64(s.Open))
	counter(acceptedDesc, s.AcceptedTLS, "tls")
	counter(acceptedDesc, s.AcceptedSTARTTLS, "starttls")
	counter(connRefusedDesc, s.RefusedMax, "max_connections")
	counter(connRefusedDesc, s.RefusedPerIP, "max_connections_per_ip")
	counter(connRefusedDesc, s.RefusedProxyProtocol, "proxy_protocol")
	counter(loginsDesc, s.LoginsOK, "ok")
	counter(loginsDesc, s.LoginsFailed, "failed")
	counter(loginsDesc, s.LoginsRefused, "refused")
	counter(registrationsDesc, s.RegistrationsOK, "ok")
	counter(registrationsDesc, s.RegistrationsBad, "bad")
	counter(registrationsDesc, s.RegistrationsLimit, "limit")
	counter(registrationsDesc, s.RegistrationsError, "error")
}
