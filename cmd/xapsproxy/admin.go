package main

import (
	"errors"
	"fmt"
	"net"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/xapsproxy/xapsproxy/admin"
	"github.com/xapsproxy/xapsproxy/dovecot"
)

// adminOptions is what the admin listener reports on; events is nil
// without [events].
func (a *app) adminOptions(events *dovecot.Handler, sendLatency prometheus.Histogram) admin.Options {
	o := admin.Options{
		Store:       a.store,
		Watchers:    a.watch,
		Pushes:      a.pusher,
		Proxy:       a.proxy,
		SendLatency: sendLatency,
		Serving:     a.listenersUp,
		Certificates: []admin.Certificate{
			{Name: "proxy", NotAfter: a.cert.NotAfter},
		},

		Token:         a.cfg.Admin.Token,
		Accounts:      a.watch,
		PushStatus:    a.pusher,
		CanonicalUser: a.cfg.Backend.CanonicalUser,
		Topic:         a.topic,
		Logger:        a.log.With("part", "admin"),
	}
	if events != nil {
		o.Events = events
	}
	if a.cluster != nil {
		o.Cluster = a.cluster
	}
	// Read at every scrape: SIGHUP may have reloaded the credential.
	o.Certificates = append(o.Certificates, admin.Certificate{Name: "apns", NotAfter: a.apnsExpiry})
	return o
}

// listenersUp reports whether run serves the listeners, for /readyz.
func (a *app) listenersUp() error {
	if !a.serving.Load() {
		return errors.New("not serving: starting or shutting down")
	}
	want := 0
	for _, ln := range []net.Listener{a.tlsLn, a.startTLSLn} {
		if ln != nil {
			want++
		}
	}
	if n := a.proxy.Stats().Listeners; n < want {
		return fmt.Errorf("%d of the %d client listeners accepting", n, want)
	}
	return nil
}
