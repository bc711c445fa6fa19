// Package admin serves xapsproxy's operator endpoints over HTTP:
//
//   - /healthz: liveness, 200 "ok" when the process answers and the store
//     answers a read. Restart the process when it fails.
//   - /readyz: readiness, 200 "ready" when the listeners are up, the store
//     takes a write, no certificate has expired, APNs accepts the
//     credential and fewer than half of the watchers are failing (or, with
//     Dovecot's own events, the catch-up's looks do not keep failing);
//     else 503 with one line per condition that does not hold. Take the
//     instance out of rotation, and alert, when it fails; do not restart.
//   - /metrics: Prometheus: the Go runtime, the process, the client
//     connections, logins and registrations, the registrations stored, the
//     watchers and backend logins, events, Dovecot's requests, pushes and
//     APNs's latency, the outbox and certificate expiry (README's
//     Monitoring section lists them).
//
// Use: http.Serve(ln, admin.Handler(admin.Options{Store: st, ...})). The
// listener defaults to loopback only; put it behind something that
// authenticates before exposing it further.
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

// Options are what the admin handler reports on. Store is required; a nil
// Watchers or Pushes leaves their metrics out.
type Options struct {
	Store    store.Store
	Watchers Watchers
	Pushes   Pushes

	// Proxy, Events and SendLatency (from NewSendLatency, also given to
	// the pusher) add their metrics; nil leaves them out.
	Proxy       Proxy
	Events      Events
	SendLatency prometheus.Histogram
	// Certificates are shown with their expiry, and /readyz fails once
	// one has expired.
	Certificates []Certificate
	// Serving reports whether the listeners are up, for /readyz; nil
	// means they are.
	Serving func() error
}

// Handler returns the admin HTTP handler.
func Handler(o Options) http.Handler {
	st := o.Store
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	if o.Watchers != nil {
		reg.MustRegister(watchCollector{o.Watchers})
	}
	if o.Pushes != nil {
		reg.MustRegister(pushCollector{o.Pushes})
	}
	registerMore(reg, o)
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.Handle("GET /readyz", readiness(o, time.Now))
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
