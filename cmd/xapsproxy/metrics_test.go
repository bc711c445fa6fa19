package main

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// The admin listener's /metrics reports the watchers of the running manager.
func TestEndToEndWatcherMetrics(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	s.start()
	url := "http://" + s.app.adminLn.Addr().String() + "/metrics"
	const want = `xapsproxy_watchers{state="watching"} 1` + "\n"
	var body string
	s.connect().loginAndRegister(v2Line, "2")
	waitUntil(t, "one watcher watching in /metrics", func() bool {
		res, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		body = string(b)
		return strings.Contains(body, want)
	})
	if !strings.Contains(body, "xapsproxy_backend_greeting_timeouts_total 0\n") {
		t.Errorf("/metrics lacks the greeting timeouts counter at 0:\n%s", body)
	}
}
