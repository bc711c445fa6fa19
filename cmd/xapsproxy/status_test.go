package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/xapsproxy/xapsproxy/config"
	"github.com/xapsproxy/xapsproxy/internal/dovecottest"
)

const statusToken = "status-token-0123456789abcdef"

// statusConfig writes a copy of the stack's configuration whose
// admin.listen is where the running serve's admin listener is, as an
// operator's file would say, and returns its path.
func statusConfig(s *stack) string {
	s.t.Helper()
	doc, err := os.ReadFile(s.cfgPath)
	if err != nil {
		s.t.Fatal(err)
	}
	const bound = "\nlisten = \"127.0.0.1:0\"\n"
	if bytes.Count(doc, []byte(bound)) != 1 {
		s.t.Fatalf("the stack's config has not one admin listen line:\n%s", doc)
	}
	doc = bytes.Replace(doc, []byte(bound), []byte("\nlisten = \""+s.app.adminLn.Addr().String()+"\"\n"), 1)
	path := filepath.Join(filepath.Dir(s.cfgPath), "status.toml")
	if err := os.WriteFile(path, doc, 0o600); err != nil {
		s.t.Fatal(err)
	}
	return path
}

// runStatus runs `xapsproxy status` and returns its output and exit status.
func runStatus(t *testing.T, cfg, user string) (string, int) {
	t.Helper()
	var out, errs bytes.Buffer
	err := run(t.Context(), []string{"status", "-config", cfg, "-user", user}, &out, &errs)
	code := exitStatus(err, &out, &errs)
	return out.String() + errs.String(), code
}

// `xapsproxy status` asks the running serve: the device registered through
// the proxy (short token only), the watcher watching, and after a mail the
// push with Apple's 200 and apns-id; with serve stopped, what the store
// knows, and a note.
func TestStatusCommand(t *testing.T) {
	t.Parallel()
	s := newStackWith(t, dovecottest.Options{}, "token = \""+statusToken+"\"\n")
	s.secrets = append(s.secrets, statusToken)
	s.start()
	s.connect().loginAndRegister(v2Line, "2")
	s.waitWatching()
	cfg := statusConfig(s)

	var out string
	waitUntil(t, "status to show the watcher watching", func() bool {
		var code int
		out, code = runStatus(t, cfg, "alice")
		if code != 0 {
			t.Fatalf("status: exit %d\n%s", code, out)
		}
		return strings.Contains(out, "watcher: watching (source ")
	})
	for _, want := range []string{"user alice\n", "registrations: 1\n", "device 29183902  account " + v2Account + "  aps-version 2\n",
		"mailboxes: INBOX, Notes\n", "topic: " + topic + "\n", "last push: none\n", "recent pushes: 0\n", "Fetch New Data"} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, v2Token[:9]) || strings.Contains(out, statusToken) {
		t.Errorf("status shows the device token or the admin token:\n%s", out)
	}

	s.deliver("hello")
	push := s.apns.WaitRequests(t, 1, waitTimeout)[0]
	if push.APNsID == "" {
		t.Fatal("the fake APNs answered without an apns-id")
	}
	waitUntil(t, "status to show the push", func() bool {
		out, _ = runStatus(t, cfg, "alice")
		return strings.Contains(out, "recent pushes: 1\n")
	})
	for _, want := range []string{"device 29183902  new mail  200  apns-id " + push.APNsID + "  mailboxes INBOX\n",
		"last event: ", ", INBOX, new\n", "Apple accepted pushes (200)"} {
		if !strings.Contains(out, want) {
			t.Errorf("status after a mail lacks %q:\n%s", want, out)
		}
	}

	out, code := runStatus(t, cfg, "nobody")
	if code != 1 || !strings.Contains(out, "registrations: 0\n") || !strings.Contains(out, "proxy's host name") ||
		!strings.Contains(out, `xapsproxy: user "nobody" has no registered device`) {
		t.Errorf("status of an unknown user: exit %d\n%s", code, out)
	}

	s.stop()
	out, code = runStatus(t, cfg, "alice")
	if code != 0 {
		t.Fatalf("status with serve stopped: exit %d\n%s", code, out)
	}
	for _, want := range []string{
		"note: live watcher state and recent pushes are unavailable: serve is not running at admin.listen (",
		"registrations: 1\n", "device 29183902", "last push: ", ", 200\n", "outbox (pushes owed): 0\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status with serve stopped lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "recent pushes:") || strings.Contains(out, "watcher:") {
		t.Errorf("status with serve stopped shows live state:\n%s", out)
	}
}

// status reaches a listener bound to every address on loopback, and
// names admin.token when serve refuses the token it sent.
func TestStatusAsksServe(t *testing.T) {
	t.Parallel()
	for addr, want := range map[string]string{"0.0.0.0:9143": "127.0.0.1:9143", ":9143": "127.0.0.1:9143", "[::]:9143": "[::1]:9143", "192.0.2.1:9143": "192.0.2.1:9143"} {
		if got := dialAddr(addr); got != want {
			t.Errorf("dialAddr(%s) = %s, want %s", addr, got, want)
		}
	}
	var auth string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		auth = r.Header.Get("Authorization")
		http.Error(w, "unauthorized", http.StatusUnauthorized)
	}))
	defer srv.Close()
	_, err := askServe(t.Context(), config.Admin{Listen: srv.Listener.Addr().String(), Token: statusToken}, "alice")
	if err == nil || !strings.HasPrefix(err.Error(), "admin.token: serve at ") || strings.Contains(err.Error(), statusToken) {
		t.Errorf("refused token: %v", err)
	}
	if auth != "Bearer "+statusToken {
		t.Errorf("Authorization sent = %q", auth)
	}
}
