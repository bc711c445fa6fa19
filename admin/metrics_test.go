package admin

import (
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/xapsproxy/xapsproxy/dovecot"
	"github.com/xapsproxy/xapsproxy/proxy"
	"github.com/xapsproxy/xapsproxy/store"
)

type fixedProxyStats proxy.Stats

func (f fixedProxyStats) Stats() proxy.Stats { return proxy.Stats(f) }

type fixedEventStats dovecot.Stats

func (f fixedEventStats) Stats() dovecot.Stats { return dovecot.Stats(f) }

// get returns the status and body of path on a handler with o.
func get(t *testing.T, o Options, path string) (int, string) {
	t.Helper()
	if o.Store == nil {
		o.Store = openStore(t)
	}
	srv := httptest.NewServer(Handler(o))
	defer srv.Close()
	res, err := http.Get(srv.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

func openStore(t *testing.T) *store.SQLite {
	t.Helper()
	st, err := store.Open(t.Context(), filepath.Join(t.TempDir(), "x.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// wantLines fails for each line of want missing from the body.
func wantLines(t *testing.T, body string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(body, w+"\n") {
			t.Errorf("/metrics lacks %q:\n%s", w, grepLines(body, "xapsproxy_"))
		}
	}
}

// wantHelp fails for each metric whose HELP text is missing or short.
func wantHelp(t *testing.T, body string, names ...string) {
	t.Helper()
	for _, n := range names {
		var help string
		for line := range strings.Lines(body) {
			if rest, ok := strings.CutPrefix(line, "# HELP "+n+" "); ok {
				help = rest
			}
		}
		if len(help) < 40 {
			t.Errorf("metric %s has HELP %q; want a sentence that says what it counts", n, help)
		}
	}
}

// The proxy's metrics are its Stats at the scrape.
func TestProxyMetrics(t *testing.T) {
	s := proxy.Stats{
		Open: 12, AcceptedTLS: 40, AcceptedSTARTTLS: 2, RefusedMax: 3, RefusedPerIP: 5, RefusedProxyProtocol: 6,
		LoginsOK: 30, LoginsFailed: 6, LoginsRefused: 1,
		RegistrationsOK: 20, RegistrationsBad: 2, RegistrationsLimit: 1, RegistrationsError: 4,
	}
	_, body := get(t, Options{Proxy: fixedProxyStats(s)}, "/metrics")
	wantLines(t, body,
		"xapsproxy_connections 12",
		"# TYPE xapsproxy_connections gauge",
		`xapsproxy_connections_accepted_total{listener="tls"} 40`,
		`xapsproxy_connections_accepted_total{listener="starttls"} 2`,
		"# TYPE xapsproxy_connections_accepted_total counter",
		`xapsproxy_connections_refused_total{reason="max_connections"} 3`,
		`xapsproxy_connections_refused_total{reason="max_connections_per_ip"} 5`,
		`xapsproxy_connections_refused_total{reason="proxy_protocol"} 6`,
		`xapsproxy_logins_total{result="ok"} 30`,
		`xapsproxy_logins_total{result="failed"} 6`,
		`xapsproxy_logins_total{result="refused"} 1`,
		`xapsproxy_registrations_total{result="ok"} 20`,
		`xapsproxy_registrations_total{result="bad"} 2`,
		`xapsproxy_registrations_total{result="limit"} 1`,
		`xapsproxy_registrations_total{result="error"} 4`,
		"# TYPE xapsproxy_registrations_total counter",
	)
	wantHelp(t, body, "xapsproxy_connections", "xapsproxy_connections_accepted_total", "xapsproxy_connections_refused_total",
		"xapsproxy_logins_total", "xapsproxy_registrations_total")
}

// The registration gauges and the outbox depth are counted in the store at
// the scrape.
func TestStoreMetrics(t *testing.T) {
	st := openStore(t)
	now := time.Now()
	for _, r := range []store.Registration{
		{User: "alice", DeviceToken: strings.Repeat("a", 64), AccountID: "a", Mailboxes: []string{"INBOX"}, Version: 2, Registered: now, Renewed: now},
		{User: "alice", DeviceToken: strings.Repeat("b", 64), AccountID: "b", Mailboxes: []string{"INBOX"}, Version: 2, Registered: now, Renewed: now},
		{User: "bob", DeviceToken: strings.Repeat("a", 64), AccountID: "c", Mailboxes: []string{"INBOX"}, Version: 2, Registered: now, Renewed: now},
	} {
		if err := st.Register(t.Context(), r); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := st.CommitMailbox(t.Context(), "alice", "INBOX", &store.MailboxState{UIDValidity: 1, UIDNext: 3}, &store.OutboxEntry{At: now}); err != nil {
		t.Fatal(err)
	}
	_, body := get(t, Options{Store: st}, "/metrics")
	wantLines(t, body,
		"xapsproxy_registered_devices 3",
		"xapsproxy_registered_accounts 2",
		"xapsproxy_outbox 1",
		"# TYPE xapsproxy_outbox gauge",
	)
	wantHelp(t, body, "xapsproxy_registered_devices", "xapsproxy_registered_accounts", "xapsproxy_outbox")
	// A store that does not answer leaves the gauges out, not the scrape.
	st.Close()
	code, body := get(t, Options{Store: st}, "/metrics")
	if code != 200 || strings.Contains(body, "xapsproxy_registered_devices") || !strings.Contains(body, "go_goroutines") {
		t.Errorf("/metrics with the store closed = %d:\n%s", code, grepLines(body, "xapsproxy_"))
	}
}

// Dovecot's events by result: refused is a wrong secret, malformed the
// other refusals.
func TestEventMetrics(t *testing.T) {
	_, body := get(t, Options{Events: fixedEventStats{Accepted: 90, Unauthorized: 2, Refused: 7, Hints: 120}}, "/metrics")
	wantLines(t, body,
		`xapsproxy_dovecot_requests_total{result="accepted"} 90`,
		`xapsproxy_dovecot_requests_total{result="refused"} 2`,
		`xapsproxy_dovecot_requests_total{result="malformed"} 7`,
		"# TYPE xapsproxy_dovecot_requests_total counter",
	)
	wantHelp(t, body, "xapsproxy_dovecot_requests_total")
}

// Certificates show their NotAfter as read at the scrape (a reload shows);
// one without (a token key) is left out. The latency histogram has the
// buckets from 5 ms to 30 s.
func TestCertificateAndLatencyMetrics(t *testing.T) {
	apns := time.Date(2027, 1, 2, 3, 4, 5, 0, time.UTC)
	proxyCert := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	lat := NewSendLatency()
	lat.Observe(0.042)
	lat.Observe(3)
	o := Options{
		SendLatency: lat,
		Certificates: []Certificate{
			{Name: "apns", NotAfter: func() time.Time { return apns }},
			{Name: "proxy", NotAfter: func() time.Time { return proxyCert }},
			{Name: "none", NotAfter: func() time.Time { return time.Time{} }},
		},
	}
	_, body := get(t, o, "/metrics")
	wantLines(t, body,
		`xapsproxy_certificate_expiry_timestamp_seconds{certificate="apns"} 1.798859045e+09`,
		`xapsproxy_certificate_expiry_timestamp_seconds{certificate="proxy"} 1.7723232e+09`,
		"# TYPE xapsproxy_certificate_expiry_timestamp_seconds gauge",
		`xapsproxy_apns_latency_seconds_bucket{le="0.005"} 0`,
		`xapsproxy_apns_latency_seconds_bucket{le="0.05"} 1`,
		`xapsproxy_apns_latency_seconds_bucket{le="5"} 2`,
		`xapsproxy_apns_latency_seconds_bucket{le="30"} 2`,
		"xapsproxy_apns_latency_seconds_count 2",
		"# TYPE xapsproxy_apns_latency_seconds histogram",
	)
	if strings.Contains(body, `certificate="none"`) {
		t.Error("a certificate without a NotAfter is shown")
	}
	wantHelp(t, body, "xapsproxy_certificate_expiry_timestamp_seconds", "xapsproxy_apns_latency_seconds")
	proxyCert = proxyCert.Add(90 * 24 * time.Hour) // renewed and reloaded
	_, body = get(t, o, "/metrics")
	wantLines(t, body, `xapsproxy_certificate_expiry_timestamp_seconds{certificate="proxy"} 1.7800992e+09`)
}
