// Package admin serves xapsproxy's operator endpoints over HTTP:
//
//   - /healthz: liveness, 200 "ok" when the process answers and the store
//     answers a read. Restart the process when it fails.
//   - /readyz: readiness, 200 "ready" when the listeners are up, the store
//     takes a write (checked at most once a second, however many ask),
//     no certificate has expired, APNs accepts the
//     credential and fewer than half of the watchers are failing (or, with
//     Dovecot's own events, the catch-up's looks do not keep failing);
//     else 503 with one line per condition that does not hold. Take the
//     instance out of rotation, and alert, when it fails; do not restart.
//   - /metrics: Prometheus: the Go runtime, the process, the client
//     connections, logins and registrations, the registrations stored, the
//     watchers and backend logins, events, Dovecot's requests, pushes and
//     APNs's latency, the outbox and certificate expiry (README's
//     Monitoring section lists them).
//   - /status: the status page, why a user's phone does or does not get
//     push (status*.go), with its JSON form /status.json and a test push.
//
// Use: http.Serve(ln, admin.Handler(admin.Options{Store: st, ...})). The
// listener defaults to loopback only; elsewhere Options.Token is required.
package admin

import (
	"context"
	"fmt"
	"log/slog"
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
	// Cluster, when instances share PostgreSQL, adds its metrics; nil
	// leaves them out.
	Cluster Cluster
	// Certificates are shown with their expiry, and /readyz fails once
	// one has expired.
	Certificates []Certificate
	// Serving reports whether the listeners are up, for /readyz; nil
	// means they are.
	Serving func() error
	// The status page (status.go). Token, when set, is required by every
	// endpoint but /healthz and /readyz; "" = none (loopback only).
	// Accounts and PushStatus are the running watch manager and pusher
	// (nil: the page shows what the store knows, and no test push).
	// CanonicalUser maps a name looked up to the stored form (nil: as
	// typed); Topic is the credential's topic ("" = not compared).
	Token         string
	Accounts      Accounts
	PushStatus    PushStatus
	CanonicalUser func(string) string
	Topic         string
	Logger        *slog.Logger // nil discards
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
	addStatus(mux, o)
	return protect(mux, o.Token, time.Now)
}
