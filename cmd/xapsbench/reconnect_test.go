package main

import (
	"context"
	"io"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/xapsproxy/xapsproxy/internal/dovecotrun"
)

func TestParseMetrics(t *testing.T) {
	m, err := parseMetrics(strings.NewReader(`# HELP xapsproxy_watchers Watchers by state.
# TYPE xapsproxy_watchers gauge
xapsproxy_watchers{state="connecting"} 2
xapsproxy_watchers{state="watching"} 498
xapsproxy_backend_greeting_timeouts_total 0
go_gc_duration_seconds{quantile="0.5"} 1.5e-05
`))
	if err != nil {
		t.Fatal(err)
	}
	if m[metricWatching] != 498 || m[`xapsproxy_watchers{state="connecting"}`] != 2 || m[metricGreetingTimeouts] != 0 || len(m) != 4 {
		t.Errorf("parsed %v", m)
	}
	if _, err := parseMetrics(strings.NewReader("xapsproxy_watchers{} many\n")); err == nil {
		t.Error("a value that is not a number: no error")
	}
}

func TestParseCPUTime(t *testing.T) {
	stat := "4321 (xaps proxy) S 1 4321 4321 0 -1 4194560 2520 0 0 0 123 45 0 0 20 0 9 0 1000 1500000000 9000 18446744073709551615\n"
	if d, err := parseCPUTime([]byte(stat)); err != nil || d != 1680*time.Millisecond {
		t.Errorf("parseCPUTime = %v, %v; want 1.68s", d, err)
	}
	if _, err := parseCPUTime([]byte("garbage")); err == nil {
		t.Error("malformed stat: no error")
	}
}

func TestDovecotWarnings(t *testing.T) {
	log := `Dec 01 23:34:11 imap(user0460)<27319><G4ms9pphJMZ/AAAB>: Warning: Inotify instance limit for user 65534 (UID nobody) exceeded, disabling.
Dec 01 23:34:11 imap(user0454)<27321><9cOs9pphGMZ/AAAB>: Warning: Inotify instance limit for user 65534 (UID nobody) exceeded, disabling.
Dec 01 23:34:12 imap-login: Info: Login: user=<user0001>, method=PLAIN
Dec 01 23:34:13 master: Error: service(imap): child 123 killed with signal 9
`
	got := dovecotWarnings(log)
	want := []string{
		"    2 x imap: Warning: Inotify instance limit for user 65534 (UID nobody) exceeded, disabling.",
		"    1 x master: Error: service(imap): child 123 killed with signal 9",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// The whole command, small: Dovecot with the raised limits, a built
// xapsproxy, the warm-up and one run, and a report with its figures.
func TestReconnectSmall(t *testing.T) {
	if !dovecotrun.Available() {
		if os.Getenv("XAPSPROXY_TEST_DOVECOT") == "required" {
			t.Fatal(dovecotrun.ErrNotInstalled)
		}
		t.Skip(dovecotrun.ErrNotInstalled)
	}
	if testing.Short() {
		t.Skip("builds xapsproxy and runs Dovecot")
	}
	var out strings.Builder
	if err := reconnectCmd(context.Background(), []string{"-accounts", "10", "-runs", "1"}, &out, io.Discard); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	report := out.String()
	// run, start, CPU, greeting timeouts, sessions | Dovecot down, restart,
	// CPU, greeting timeouts, reconnects, sessions
	row := regexp.MustCompile(`(?m)^  1 +\d+\.\d\d s +\d+\.\d\d s +0 +10 \| +\d+\.\d\d s +\d+\.\d\d s +\d+\.\d\d s +0 +\d+ +10$`)
	if !row.MatchString(report) {
		t.Errorf("the report has no row for run 1 with 10 sessions and no greeting timeouts:\n%s", report)
	}
}
