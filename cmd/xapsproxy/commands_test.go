package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/xapsproxy/xapsproxy/store"
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

// registrations list shows what clients sent (user names, account ids,
// mailbox names) with control characters escaped: a device must not be
// able to drive the operator's terminal.
func TestRegistrationsListEscapesControls(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	regs := []store.Registration{{User: "eve\x1b[2J", DeviceToken: strings.Repeat("ab", 32), AccountID: "A\u009b1m", Version: 2,
		Mailboxes: []string{"INBOX", "x\x1b]0;pwned\x07"}, Renewed: time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)}}
	if err := printRegistrations(&out, regs); err != nil {
		t.Fatal(err)
	}
	if strings.ContainsAny(out.String(), "\x1b\x07\u009b") {
		t.Errorf("list has raw control characters: %q", out.String())
	}
	for _, want := range []string{`eve\x1b[2J`, `A\x9b1m`, `INBOX,x\x1b]0;pwned\x07`} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("list lacks %q: %q", want, out.String())
		}
	}
}
