// Package admin serves xapsproxy's operator endpoints over HTTP: /healthz
// (200 when the store answers), /metrics (Prometheus: the Go runtime, the
// process, the watchers, the pushes) and the status page (/status: why a
// user's phone does or does not get push). The listener defaults to
// loopback only; elsewhere Options.Token is required.
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
	addStatus(mux, o)
	return protect(mux, o.Token)
}
