package admin

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/xapsproxy/xapsproxy/store"
	"github.com/xapsproxy/xapsproxy/watch"
)

// What /readyz tolerates.
const (
	// readyWriteTimeout bounds the store's write check; readyWriteEvery
	// is how long its answer serves every /readyz (which needs no token).
	readyWriteTimeout = 2 * time.Second
	readyWriteEvery   = time.Second
	// maxFailingWatchers is the share of watchers in backoff or waiting
	// for an unreachable backend at which the proxy is not ready (at least
	// one failing): a backend refusing the master login puts them all
	// there, a few accounts with trouble of their own do not.
	maxFailingWatchers = 0.5
	// maxCatchUpFailingInRow is how many of the catch-up's looks at
	// accounts may fail in a row (Dovecot's own events) before the proxy
	// is not ready: one account of its own may fail, all of them fail
	// together when the backend refuses the master login.
	maxCatchUpFailingInRow = 3
)

// registerMore registers the collectors of Options beyond the watchers' and
// the pushes'.
func registerMore(reg *prometheus.Registry, o Options) {
	reg.MustRegister(storeCollector{o.Store})
	if o.Proxy != nil {
		reg.MustRegister(proxyCollector{o.Proxy})
	}
	if o.Events != nil {
		reg.MustRegister(eventsCollector{o.Events})
	}
	if o.Cluster != nil {
		reg.MustRegister(clusterCollector{o.Cluster})
	}
	if o.SendLatency != nil {
		reg.MustRegister(o.SendLatency)
	}
	if len(o.Certificates) > 0 {
		reg.MustRegister(certCollector(o.Certificates))
	}
}

// readiness answers /readyz: 200 "ready" when every condition holds, else
// 503 with one line per condition that does not.
func readiness(o Options, now func() time.Time) http.HandlerFunc {
	wc := &writeCheck{st: o.Store, now: now}
	return func(w http.ResponseWriter, r *http.Request) {
		problems := notReady(r.Context(), o, wc, now())
		if len(problems) > 0 {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, strings.Join(problems, "\n"))
			return
		}
		fmt.Fprintln(w, "ready")
	}
}

// notReady returns a line for each reason the proxy is not ready.
func notReady(ctx context.Context, o Options, wc *writeCheck, now time.Time) []string {
	var out []string
	if o.Serving != nil {
		if err := o.Serving(); err != nil {
			out = append(out, "listeners: "+err.Error())
		}
	}
	if err := wc.check(ctx); err != nil {
		out = append(out, fmt.Sprintf("store: not writable: %v", err))
	}
	for _, c := range o.Certificates {
		if t := c.NotAfter(); !t.IsZero() && now.After(t) {
			out = append(out, fmt.Sprintf("certificate %s: expired on %s", c.Name, t.UTC().Format(time.RFC3339)))
		}
	}
	if o.Pushes != nil && o.Pushes.Stats().Held == "credential" {
		out = append(out, "apns: APNs refuses the credential (403); every push is held until it accepts it")
	}
	if o.Watchers != nil {
		out = append(out, watchersNotReady(o.Watchers.Stats())...)
	}
	return out
}

// watchersNotReady says whether too many watchers are failing.
func watchersNotReady(s watch.Stats) []string {
	var out []string
	total := 0
	for _, n := range s.Watchers {
		total += n
	}
	failing := s.Watchers[watch.StateBackoff] + s.Watchers[watch.StateUnreachable]
	if failing > 0 && float64(failing) >= maxFailingWatchers*float64(total) {
		line := fmt.Sprintf("watchers: %d of %d failing (in backoff or waiting for the backend)", failing, total)
		switch {
		case s.Refused > 0:
			line += fmt.Sprintf("; the backend refused the login of %d: check watch.master_user and watch.master_password", s.Refused)
		case s.BackendUnreachable:
			line += "; the backend does not answer"
		}
		out = append(out, line)
	}
	if s.CatchUpFailingInRow >= maxCatchUpFailingInRow {
		out = append(out, fmt.Sprintf("catch-up: its last %d looks at accounts failed (is the backend refusing the master login?)", s.CatchUpFailingInRow))
	}
	return out
}

// writeCheck is the store's write check for /readyz, made at most once per
// readyWriteEvery however many ask: /readyz needs no token, and each check
// takes the store's one writer connection, so requests from anyone who
// reaches the listener must not queue ahead of the store's own writes.
type writeCheck struct {
	st  store.Store
	now func() time.Time

	mu  sync.Mutex // held during a check: the others wait for its answer
	at  time.Time  // of the last check; zero before the first
	err error
}

func (c *writeCheck) check(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.at.IsZero() && c.now().Sub(c.at) < readyWriteEvery {
		return c.err
	}
	// Its answer is shared: one request's going away must not be it.
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), readyWriteTimeout)
	defer cancel()
	c.err = c.st.PingWrite(wctx)
	c.at = c.now()
	return c.err
}
