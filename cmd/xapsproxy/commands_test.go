package main

import (
	"bytes"
	"strings"
	"testing"
)

// The operator commands, run against the same configuration as a live proxy.
func TestOperatorCommands(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	s.start()
	s.connect().loginAndRegister(v2Line, "2")

	cmd := func(args ...string) (string, error) {
		var out bytes.Buffer
		err := run(t.Context(), args, &out, &out)
		return out.String(), err
	}

	out, err := cmd("check", "-config", s.cfgPath, "-user", "alice", "-dovecot-config", s.dovecot.Dir+"/dovecot.conf")
	if err != nil {
		t.Fatalf("check: %v\n%s", err, out)
	}
	t.Logf("check:\n%s", out)
	for _, want := range []string{"topic " + topic, "reachable", "\nok    master login as alice*master: ok\n",
		"\nok    event source for alice: notify (watch.source = auto, and [events] has no secret: NOTIFY where the backend offers it after login, else IDLE; the backend offers NOTIFY after login)\n",
		"\n0 problems, "} {
		if !strings.Contains(out, want) {
			t.Errorf("check output lacks %q:\n%s", want, out)
		}
	}

	out, err = cmd("registrations", "-config", s.cfgPath, "list")
	if err != nil || !strings.Contains(out, "alice") || !strings.Contains(out, v2Token) || !strings.Contains(out, "INBOX,Notes") || !strings.Contains(out, "1 registrations") {
		t.Errorf("registrations list: %v\n%s", err, out)
	}

	out, err = cmd("push", "-config", s.cfgPath, "-user", "alice")
	if err != nil || !strings.Contains(out, "200 (delivered)") {
		t.Errorf("push: %v\n%s", err, out)
	}
	if r := s.apns.WaitRequests(t, 1, waitTimeout)[0]; r.Token != v2Token || r.AccountID != v2Account {
		t.Errorf("test push went to %s / %s", r.Token, r.AccountID)
	}

	out, err = cmd("registrations", "-config", s.cfgPath, "delete", "alice", strings.ToUpper(v2Token))
	if err != nil || !strings.Contains(out, "deleted") {
		t.Errorf("registrations delete: %v\n%s", err, out)
	}
	out, err = cmd("registrations", "-config", s.cfgPath)
	if err != nil || !strings.Contains(out, "0 registrations") {
		t.Errorf("registrations after delete: %v\n%s", err, out)
	}
	if _, err := cmd("push", "-config", s.cfgPath, "-user", "alice"); err == nil || !strings.Contains(err.Error(), "no registered devices") {
		t.Errorf("push without devices: %v", err)
	}
}
