// Package admin serves xapsproxy's operator endpoints over HTTP: /healthz
// (200 when the store answers) and /metrics (Prometheus: the Go runtime,
// the process, the watchers, the pushes). The listener defaults to loopback
// only; put it behind something that authenticates before exposing it
// further.
package admin

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/xapsproxy/xapsproxy/store"
)

const healthTimeout = 5 * time.Second

// Handler returns the admin HTTP handler; w and p, when not nil, add the
// watchers' and the pusher's metrics.
func Handler(st store.Store, w Watchers, p Pushes) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	if w != nil {
		reg.MustRegister(watchCollector{w})
	}
	if p != nil {
		reg.MustRegister(pushCollector{p})
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), healthTimeout)
		defer cancel()
		if err := st.Ping(ctx); err != nil {
			http.Error(w, fmt.Sprintf("store: %v", err), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	return mux
}
