package admin

import (
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/xapsproxy/xapsproxy/push"
	"github.com/xapsproxy/xapsproxy/store"
	"github.com/xapsproxy/xapsproxy/watch"
)

func TestEndpoints(t *testing.T) {
	st, err := store.Open(t.Context(), filepath.Join(t.TempDir(), "x.db"))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(Handler(Options{Store: st}))
	defer srv.Close()
	get := func(path string) (int, string) {
		res, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		body, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(body)
	}
	if code, body := get("/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz = %d %q", code, body)
	}
	if code, body := get("/metrics"); code != 200 || !strings.Contains(body, "go_goroutines") ||
		!strings.Contains(body, "\nxapsproxy_registered_devices 0\n") || strings.Contains(body, "xapsproxy_watchers") {
		t.Errorf("/metrics without watchers = %d, %d bytes: want the Go metrics, the store's and no others:\n%s", code, len(body), grepLines(body, "xapsproxy_"))
	}
	st.Close()
	if code, body := get("/healthz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "store") {
		t.Errorf("/healthz with the store closed = %d %q", code, body)
	}
}

type fixedStats watch.Stats

func (f fixedStats) Stats() watch.Stats { return watch.Stats(f) }

// The watchers' metrics are the manager's Stats at the time of the scrape.
func TestWatcherMetrics(t *testing.T) {
	var s watch.Stats
	s.Watchers[watch.StateWatching] = 498
	s.Watchers[watch.StateConnecting] = 2
	s.GreetingTimeouts, s.Reconnects = 3, 517
	s.Owners, s.NotifySessions, s.IdleSessions = 500, 499, 1
	s.CatchUpPending, s.CatchUps, s.CatchUpFailures = 7, 493, 2
	s.Source = watch.SourceIdle
	s.LoginsRefused, s.LoginsFailed = 4, 9
	s.Events, s.EventsNew, s.EventsChanged = 30, 21, 9
	s.Hints, s.HintsUnregistered, s.HintsUnwatched, s.HintsOverflowed = 40, 5, 11, 2
	body := scrape(t, fixedStats(s), nil)
	for _, want := range []string{
		`xapsproxy_hints_total{result="applied"} 40`,
		`xapsproxy_hints_total{result="unregistered_mailbox"} 5`,
		`xapsproxy_hints_total{result="unwatched_user"} 11`,
		`xapsproxy_hints_total{result="overflowed"} 2`,
		`xapsproxy_watchers{state="watching"} 498`,
		`xapsproxy_watchers{state="connecting"} 2`,
		`xapsproxy_watchers{state="backoff"} 0`,
		`xapsproxy_watchers{state="unreachable"} 0`,
		`xapsproxy_watched_accounts{source="idle",state="watching"} 498`,
		`xapsproxy_watched_accounts{source="idle",state="connecting"} 2`,
		`xapsproxy_watched_accounts{source="idle",state="waiting_for_login"} 0`,
		"# TYPE xapsproxy_watched_accounts gauge",
		`xapsproxy_backend_login_failures_total{kind="refused"} 4`,
		`xapsproxy_backend_login_failures_total{kind="temporary"} 9`,
		"# TYPE xapsproxy_backend_login_failures_total counter",
		`xapsproxy_events_total{kind="new"} 21`,
		`xapsproxy_events_total{kind="changed"} 9`,
		"# TYPE xapsproxy_events_total counter",
		"xapsproxy_backend_greeting_timeouts_total 3",
		"xapsproxy_backend_reconnects_total 517",
		"# TYPE xapsproxy_backend_reconnects_total counter",
		"# TYPE xapsproxy_watchers gauge",
		"xapsproxy_accounts 500",
		`xapsproxy_backend_sessions{wait="notify"} 499`,
		`xapsproxy_backend_sessions{wait="idle"} 1`,
		"xapsproxy_catchup_pending 7",
		`xapsproxy_catchups_total{result="ok"} 493`,
		`xapsproxy_catchups_total{result="failed"} 2`,
		"# TYPE xapsproxy_catchups_total counter",
	} {
		if !strings.Contains(body, want+"\n") {
			t.Errorf("/metrics lacks %q:\n%s", want, grepLines(body, "xapsproxy_"))
		}
	}
}

// grepLines returns the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for line := range strings.Lines(s) {
		if strings.Contains(line, sub) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "")
}

type fixedPushStats push.Stats

func (f fixedPushStats) Stats() push.Stats { return push.Stats(f) }

// The pusher's metrics: APNs's answers by status and reason, what holds
// pushes back, the backlog and the workers.
func TestPushMetrics(t *testing.T) {
	s := push.Stats{
		Answers: map[string]uint64{"200": 41, "400 DeviceTokenNotForTopic": 3, "403 BadCertificate": 1, "error": 2},
		Held:    "credential", Pending: 17, Workers: 5,
	}
	body := scrape(t, nil, fixedPushStats(s))
	for _, want := range []string{
		`xapsproxy_pushes_total{reason="",status="200"} 41`,
		`xapsproxy_pushes_total{reason="DeviceTokenNotForTopic",status="400"} 3`,
		`xapsproxy_pushes_total{reason="BadCertificate",status="403"} 1`,
		`xapsproxy_pushes_total{reason="",status="error"} 2`,
		"# TYPE xapsproxy_pushes_total counter",
		`xapsproxy_push_held{cause="credential"} 1`,
		`xapsproxy_push_held{cause="outage"} 0`,
		"xapsproxy_push_pending 17",
		"xapsproxy_push_workers 5",
	} {
		if !strings.Contains(body, want+"\n") {
			t.Errorf("/metrics lacks %q:\n%s", want, grepLines(body, "xapsproxy_"))
		}
	}
}

// scrape returns /metrics of a handler over a fresh store with w and p.
func scrape(t *testing.T, w Watchers, p Pushes) string {
	t.Helper()
	st, err := store.Open(t.Context(), filepath.Join(t.TempDir(), "x.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	srv := httptest.NewServer(Handler(Options{Store: st, Watchers: w, Pushes: p}))
	defer srv.Close()
	res, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return string(b)
}

// With Dovecot's own events there are no watchers: the watched accounts
// are the owners, those waiting for the catch-up apart.
func TestWatchedAccountsWithDovecotEvents(t *testing.T) {
	s := watch.Stats{Source: watch.SourceEvents, Owners: 40, CatchUpPending: 15}
	body := scrape(t, fixedStats(s), nil)
	for _, want := range []string{
		`xapsproxy_watched_accounts{source="dovecot",state="watching"} 25`,
		`xapsproxy_watched_accounts{source="dovecot",state="catching_up"} 15`,
		`xapsproxy_watchers{state="watching"} 0`,
	} {
		if !strings.Contains(body, want+"\n") {
			t.Errorf("/metrics lacks %q:\n%s", want, grepLines(body, "xapsproxy_"))
		}
	}
	if strings.Contains(body, `source="dovecot",state="backoff"`) {
		t.Errorf("watcher states shown for Dovecot's events:\n%s", grepLines(body, "xapsproxy_watched"))
	}
}
