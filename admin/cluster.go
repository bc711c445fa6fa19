package admin

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/xapsproxy/xapsproxy/cluster"
)

// Cluster is what /metrics reports of the instances sharing PostgreSQL.
type Cluster interface {
	Stats() cluster.Stats
}

var (
	clusterOwnedDesc = prometheus.NewDesc("xapsproxy_cluster_accounts_owned",
		"Accounts this instance owns (watches and pushes for) among the instances sharing the PostgreSQL store.", nil, nil)
	clusterInstancesDesc = prometheus.NewDesc("xapsproxy_cluster_instances",
		"Live instances, this one included, at the last heartbeat.", nil, nil)
	clusterLeasesDesc = prometheus.NewDesc("xapsproxy_cluster_leases_total",
		"Account leases by what happened: claimed (this instance became the owner), handed_over (given to the account's new owner after a rebalance), lost (given up because they could not be renewed in time: PostgreSQL unreachable).",
		[]string{"event"}, nil)
	clusterReconnectsDesc = prometheus.NewDesc("xapsproxy_cluster_listener_reconnects_total",
		"Reconnections of the LISTEN connection that carries registrations and events between the instances.", nil, nil)
)

type clusterCollector struct{ c Cluster }

func (c clusterCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{clusterOwnedDesc, clusterInstancesDesc, clusterLeasesDesc, clusterReconnectsDesc} {
		ch <- d
	}
}

func (c clusterCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.c.Stats()
	ch <- prometheus.MustNewConstMetric(clusterOwnedDesc, prometheus.GaugeValue, float64(s.Owned))
	ch <- prometheus.MustNewConstMetric(clusterInstancesDesc, prometheus.GaugeValue, float64(s.Instances))
	ch <- prometheus.MustNewConstMetric(clusterLeasesDesc, prometheus.CounterValue, float64(s.Claimed), "claimed")
	ch <- prometheus.MustNewConstMetric(clusterLeasesDesc, prometheus.CounterValue, float64(s.HandedOver), "handed_over")
	ch <- prometheus.MustNewConstMetric(clusterLeasesDesc, prometheus.CounterValue, float64(s.Lost), "lost")
	ch <- prometheus.MustNewConstMetric(clusterReconnectsDesc, prometheus.CounterValue, float64(s.Reconnects))
}
