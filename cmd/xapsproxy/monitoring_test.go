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
	return firstCertificate(t, file).NotAfter
}

// firstCertificate parses the first certificate in a PEM file.
func firstCertificate(t *testing.T, file string) *x509.Certificate {
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
			return c
		}
	}
}

// After a device logs in and registers and a delivered mail is pushed, the
// real binary's /metrics shows each step, and /readyz says ready.
func TestBinaryMetricsAfterAPush(t *testing.T) {
	t.Parallel()
	s := newStackWith(t, dovecottest.Options{}, "")
	p := startServe(t, s.cfgPath)
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

// /readyz follows the backend: ready while the watcher watches, 503 with
// a line about the refused login once Dovecot refuses the master password
// (changed in Dovecot, the watcher's session kicked), and ready again once
// serve runs with the new password.
func TestBinaryReadinessFollowsTheMasterLogin(t *testing.T) {
	t.Parallel()
	const newMaster = "the-new-master-password"
	s := newStackWith(t, dovecottest.Options{}, "")
	doc, err := os.ReadFile(s.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	notify := strings.Replace(string(doc), "[watch]\n", "[watch]\nsource = \"notify\"\n", 1)
	if err := os.WriteFile(s.cfgPath, []byte(notify), 0o600); err != nil {
		t.Fatal(err)
	}
	first := startServe(t, s.cfgPath) // startServe shows each serve's log on failure
	d := dialProxy(t, s, first)
	d.loginAndRegisterInbox()
	d.conn.Close()
	waitServeWatching(t, first)
	waitReady(t, first, http.StatusOK, "ready\n")

	s.dovecot.SetMasterPassword(t, "alice", newMaster)
	s.dovecot.Doveadm(t, "kick", "alice")
	body := waitReady(t, first, http.StatusServiceUnavailable, "watchers: 1 of 1 failing")
	if !strings.Contains(body, "the backend refused the login of 1") || strings.Count(body, "\n") != 1 {
		t.Errorf("/readyz = %q; want one line saying the backend refused the login", body)
	}
	_, metrics := adminGet(t, first, "/metrics")
	if n, _ := metricValue(metrics, `xapsproxy_backend_login_failures_total{kind="refused"}`); n < 1 {
		t.Errorf("refused backend logins = %v, want at least 1", n)
	}
	if v, _ := metricValue(metrics, `xapsproxy_watched_accounts{source="notify",state="backoff"}`); v != 1 {
		t.Errorf("watched accounts in backoff = %v, want 1:\n%s", v, grepMetrics(metrics))
	}
	if code, _ := adminGet(t, first, "/healthz"); code != http.StatusOK {
		t.Errorf("/healthz = %d while not ready; want 200: the process is alive", code)
	}

	// The operator puts the new password in the configuration and restarts.
	first.kill()
	fixed := strings.Replace(notify, strconv.Quote(dovecotMasterPassword), strconv.Quote(newMaster), 1)
	if fixed == notify {
		t.Fatal("no master_password line to change in the configuration")
	}
	if err := os.WriteFile(s.cfgPath, []byte(fixed), 0o600); err != nil {
		t.Fatal(err)
	}
	second := startServe(t, s.cfgPath)
	waitReady(t, second, http.StatusOK, "ready\n")
	for _, p := range []*serveProc{first, second} {
		if strings.Contains(p.log(), newMaster) || strings.Contains(p.log(), dovecotMasterPassword) {
			t.Error("serve logged a master password")
		}
	}
}

// dovecotMasterPassword is the master password dovecottest starts with.
const dovecotMasterPassword = "masterpw"

// waitReady polls p's /readyz until it answers code with a body
// containing want, and returns that body.
func waitReady(t *testing.T, p *serveProc, code int, want string) string {
	t.Helper()
	var got int
	var body string
	deadline := time.Now().Add(waitTimeout)
	for {
		if got, body = adminGet(t, p, "/readyz"); got == code && strings.Contains(body, want) {
			return body
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz = %d %q after %v; want %d with %q", got, body, waitTimeout, code, want)
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}
}
