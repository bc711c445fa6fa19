package main

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestDemo(t *testing.T) {
	t.Parallel()
	var out, errs bytes.Buffer
	if err := run(t.Context(), []string{"demo"}, &out, &errs); err != nil {
		t.Fatalf("demo: %v\n%s\n%s", err, out.String(), errs.String())
	}
	for _, want := range []string{
		"a1 OK [CAPABILITY ",
		`* XAPPLEPUSHSERVICE "mailbox" "INBOX"` + "\n" + `   * XAPPLEPUSHSERVICE aps-version "2" aps-topic "` + demoTopic + `"`,
		"request: POST /3/device/" + demoToken + " HTTP/2",
		"apns-push-type: background",
		"apns-topic: " + demoTopic,
		`body: {"aps":{"account-id":"` + demoAccountID + `","m":["7e33429f656f1e6e9d79b29c3f82c57e"]}}`,
		"Demo complete.",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("demo output lacks %q:\n%s", want, out.String())
		}
	}
}

func TestUsage(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{nil, {"frobnicate"}, {"serve"}, {"push", "-config", "x"}} {
		var out bytes.Buffer
		if err := run(t.Context(), args, &out, &out); !errors.Is(err, errUsage) {
			t.Errorf("%q: err = %v, want a usage error", args, err)
		}
	}
	var out bytes.Buffer
	if err := run(t.Context(), []string{"serve", "-config", "/nonexistent.toml"}, &out, &out); err == nil || !strings.Contains(err.Error(), "/nonexistent.toml") {
		t.Errorf("missing config file: %v", err)
	}
}

// TestUsageReason: a usage error prints its reason before the usage and
// exits 2, as main does.
func TestUsageReason(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"check"}, "xapsproxy: check: -config FILE is required\n"},
		{[]string{"serve"}, "xapsproxy: serve: -config FILE is required\n"},
		{[]string{"push", "-config", "x"}, "xapsproxy: push: -user is required\n"},
		{[]string{"status", "-config", "x"}, "xapsproxy: status: -user is required\n"},
		{[]string{"frobnicate"}, "xapsproxy: unknown command \"frobnicate\"\n"},
		{[]string{"check", "-bogus"}, "xapsproxy: check: flag provided but not defined: -bogus (xapsproxy check -h lists the flags)\n"},
		{nil, ""},
	} {
		var out, errs bytes.Buffer
		err := run(t.Context(), tc.args, &out, &errs)
		if code := exitStatus(err, &out, &errs); code != 2 {
			t.Errorf("%q: exit status %d, want 2 (err %v)", tc.args, code, err)
		}
		if !strings.HasPrefix(errs.String(), tc.want+usage) || !strings.HasSuffix(errs.String(), usage) {
			t.Errorf("%q: stderr\n%s\nwant %q then the usage", tc.args, errs.String(), tc.want)
		}
		if out.Len() > 0 {
			t.Errorf("%q: stdout %q, want nothing", tc.args, out.String())
		}
	}
}

// TestUsageHelp: <command> -h prints the command and every flag with its
// doc to stdout and exits 0.
func TestUsageHelp(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		cmd   string
		line  string
		flags map[string]string
	}{
		{"serve", "usage: xapsproxy serve -config FILE\n", map[string]string{"config": "configuration file (TOML)", "debug": "log debug lines"}},
		{"check", "usage: xapsproxy check -config FILE [-user U] [-dovecot-config FILE]\n", map[string]string{"config": "configuration file (TOML)",
			"user": "also log in to the backend as this user", "dovecot-config": "read with doveconf -c FILE for its limits"}},
		{"push", "usage: xapsproxy push -config FILE -user USER\n", map[string]string{"config": "configuration file (TOML)", "user": "user whose devices get the push"}},
		{"status", "usage: xapsproxy status -config FILE -user USER\n", map[string]string{"config": "configuration file (TOML)", "user": "user whose push status to show"}},
		{"registrations", "usage: xapsproxy registrations -config FILE [list | delete USER TOKEN | delete-token TOKEN]\n", map[string]string{"config": "configuration file (TOML)"}},
		{"import-xapsd", "usage: xapsproxy import-xapsd -config FILE [-dry-run] DB\n", map[string]string{"config": "configuration file (TOML)", "dry-run": "write nothing"}},
		{"demo", "usage: xapsproxy demo [-keep]\n", map[string]string{"keep": "keep running after the demo", "debug": "log debug lines to stderr"}},
	} {
		for _, h := range []string{"-h", "-help", "--help"} {
			var out, errs bytes.Buffer
			err := run(t.Context(), []string{tc.cmd, h}, &out, &errs)
			if code := exitStatus(err, &out, &errs); code != 0 {
				t.Errorf("%s %s: exit status %d, want 0 (err %v, stderr %q)", tc.cmd, h, code, err, errs.String())
			}
			if errs.Len() > 0 {
				t.Errorf("%s %s: stderr %q, want nothing", tc.cmd, h, errs.String())
			}
			help := out.String()
			if !strings.HasPrefix(help, tc.line) {
				t.Errorf("%s %s: help does not start with %q:\n%s", tc.cmd, h, tc.line, help)
			}
			// PrintDefaults: "  -name type\n    \tdoc"; no flag left out.
			if n := strings.Count(help, "\n  -"); n != len(tc.flags) {
				t.Errorf("%s %s: %d flags in help, want %d:\n%s", tc.cmd, h, n, len(tc.flags), help)
			}
			for name, doc := range tc.flags {
				i := strings.Index(help, "\n  -"+name)
				if i < 0 || !strings.Contains(help[i:], doc) {
					t.Errorf("%s %s: help lacks -%s with %q:\n%s", tc.cmd, h, name, doc, help)
				}
			}
		}
	}
}
