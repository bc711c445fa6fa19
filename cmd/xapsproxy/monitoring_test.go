package main

import (
	"crypto/x509"
	"encoding/pem"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/xapsproxy/xapsproxy/internal/dovecottest"
)

// adminGet returns the status and body of path on p's admin listener.
func adminGet(t *testing.T, p *serveProc, path string) (int, string) {
	t.Helper()
	res, err := http.Get("http://" + serveAddr(t, p, "admin listening", "addr") + path)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// metricValue returns the value of one series (name and labels, as
// Prometheus's text format writes them) in a /metrics body.
func metricValue(body, series string) (float64, bool) {
	for line := range strings.Lines(body) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			return f, err == nil
		}
	}
	return 0, false
}

// notAfter returns the NotAfter of the first certificate in a PEM file.
func notAfter(t *testing.T, file string) time.Time {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	for {
		var b *pem.Block
		if b, data = pem.Decode(data); b == nil {
			t.Fatalf("no certificate in %s", file)
		}
		if b.Type == "CERTIFICATE" {
			c, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			return c.NotAfter
		}
	}
}

// After a device logs in and registers and a delivered mail is pushed, the
// real binary's /metrics shows each step, and /readyz says ready.
func TestBinaryMetricsAfterAPush(t *testing.T) {
	t.Parallel()
	s := newStackWith(t, dovecottest.Options{}, "")
	p := startServe(t, s.cfgPath)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("serve's log:\n%s", p.log())
		}
	})
	d := dialProxy(t, s, p)
	d.loginAndRegisterInbox()
	waitServeWatching(t, p)
	s.deliver("counted")
	s.apns.WaitRequests(t, 1, waitTimeout)
	var body string
	waitUntil(t, "the push answered and its outbox entry gone in /metrics", func() bool {
		_, body = adminGet(t, p, "/metrics")
		pushed, _ := metricValue(body, `xapsproxy_pushes_total{reason="",status="200"}`)
		outbox, ok := metricValue(body, "xapsproxy_outbox")
		return pushed == 1 && ok && outbox == 0
	})
	for series, want := range map[string]float64{
		"xapsproxy_connections":                                               1, // the device's session is still open
		`xapsproxy_connections_accepted_total{listener="tls"}`:                1,
		`xapsproxy_connections_accepted_total{listener="starttls"}`:           0,
		`xapsproxy_logins_total{result="ok"}`:                                 1,
		`xapsproxy_logins_total{result="failed"}`:                             0,
		`xapsproxy_registrations_total{result="ok"}`:                          1,
		"xapsproxy_registered_devices":                                        1,
		"xapsproxy_registered_accounts":                                       1,
		`xapsproxy_events_total{kind="new"}`:                                  1,
		`xapsproxy_events_total{kind="changed"}`:                              0,
		`xapsproxy_watched_accounts{source="auto",state="watching"}`:          1,
		`xapsproxy_backend_login_failures_total{kind="refused"}`:              0,
		"xapsproxy_outbox":                                                    0,
		`xapsproxy_certificate_expiry_timestamp_seconds{certificate="proxy"}`: float64(notAfter(t, s.cfg.Proxy.CertFile).Unix()),
		`xapsproxy_certificate_expiry_timestamp_seconds{certificate="apns"}`:  float64(notAfter(t, s.cfg.APNS.CertificateFile).Unix()),
	} {
		if got, ok := metricValue(body, series); !ok || got != want {
			t.Errorf("%s = %v (present: %v), want %v", series, got, ok, want)
		}
	}
	if n, _ := metricValue(body, "xapsproxy_apns_latency_seconds_count"); n < 1 {
		t.Errorf("xapsproxy_apns_latency_seconds_count = %v, want at least 1:\n%s", n, grepMetrics(body))
	}
	if code, body := adminGet(t, p, "/readyz"); code != http.StatusOK || body != "ready\n" {
		t.Errorf("/readyz = %d %q, want 200 ready", code, body)
	}
}

// grepMetrics returns the xapsproxy_ lines of a /metrics body.
func grepMetrics(body string) string {
	var b strings.Builder
	for line := range strings.Lines(body) {
		if strings.HasPrefix(line, "xapsproxy_") {
			b.WriteString(line)
		}
	}
	return b.String()
}
