package cluster

import "github.com/prometheus/client_golang/prometheus"

// migrationsCollector reports a node's migrations at scrape time, by role
// and state (a fixed, small label set: never a migration ID).
type migrationsCollector struct{ r *Roles }

var migrationsDesc = prometheus.NewDesc("sg_node_open_migrations",
	"Migrations not yet retired here, by role (source, destination) and state.", []string{"role", "state"}, nil)

func (c migrationsCollector) Describe(ch chan<- *prometheus.Desc) { ch <- migrationsDesc }

func (c migrationsCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(migrationsDesc, prometheus.GaugeValue, float64(c.r.Scattering()), "source", "scattering")
	for state, n := range c.r.GatherCounts() {
		ch <- prometheus.MustNewConstMetric(migrationsDesc, prometheus.GaugeValue, float64(n), "destination", state)
	}
}
