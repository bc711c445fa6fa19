package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/xapsproxy/xapsproxy/push"
)

// TestMain lets the test binary be the fake APNs child of `pushes`, which
// re-executes its own binary.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == fakeAPNsCommand {
		if err := fakeAPNsCmd(os.Args[2:], os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// The whole command, tiny: bursts with two delays and a staged one, an
// outage, the memory table and a verdict per goal.
func TestPushesQuick(t *testing.T) {
	var out, progress strings.Builder
	args := []string{"-quick", "-devices", "300", "-warmup", "50", "-delays", "0,5ms", "-staged", "0",
		"-outage", "1s", "-concurrency", "50", "-timeout", "1m"}
	if err := pushesCmd(context.Background(), args, &out, &progress); err != nil {
		t.Fatalf("%v\n%s\nprogress:\n%s", err, out.String(), progress.String())
	}
	report := out.String()
	for _, re := range []string{
		`(?m)^  0s( +\d+){3}( +\d+\.\d){3} +\d+\.\d\ds( +\d+\.\d\d){2} +0/[12]  1 each$`,
		`(?m)^  0s staged( +\d+){3}( +\d+\.\d){3} +\d+\.\d\ds( +\d+\.\d\d){2} +0/[12]  1 each$`,
		`(?m)^  5ms( +\d+){3}( +\d+\.\d){3} +\d+\.\d\ds( +\d+\.\d\d){2} +0/[12]  1 each$`,
		`(?m)^  after the recovery: \d+ requests, \d+ answered 500 \(in flight at the switch\); 300/300 devices got their push; 200s per device: max 1,$`,
		`(?m)^  devices with none 0, with more than one 0; `,
		`(?m)^  outage 1s( +[-+]?\d+\.\d){11} +\d+$`,
		`(?m)^  >= 10000 pushes/s with 0 ms delay +(NOT )?MET +\d+ pushes/s`,
		`(?m)^  >= 5000 pushes/s with 50 ms delay +n/a +no burst with this delay`,
		`(?m)^  memory returns to its baseline +(NOT )?MET `,
		`(?m)^  every push delivered exactly once +MET +every device exactly one 200 in each of 4 run\(s\)`,
		`(?m)^  backlog drained <= 10s after an outage +(NOT )?MET +last 200 \d+\.\d\d s after the recovery`,
	} {
		if !regexp.MustCompile(re).MatchString(report) {
			t.Errorf("the report has no line matching %s:\n%s", re, report)
		}
	}
}

func TestPushesSettings(t *testing.T) {
	s, err := parsePushesSettings([]string{"-quick"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if s.devices != 5000 || s.outage != 5*time.Second || len(s.delays) != 2 || s.delays[1] != 50*time.Millisecond || len(s.staged) != 1 {
		t.Errorf("quick settings %+v", s)
	}
	if s, err = parsePushesSettings([]string{"-outage", "0"}, io.Discard); err != nil || s.outage != 0 || s.devices != 100000 {
		t.Errorf("-outage 0: %+v, %v", s, err)
	}
	for _, bad := range [][]string{
		{"-delays", "fast"},
		{"-delays", "-1s"},
		{"-delays", "", "-outage", "0"},
		{"-connections", "0"},
		{"-connections", "1000"},
		{"-log", "loud"},
	} {
		if _, err := parsePushesSettings(bad, io.Discard); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

// The fake APNs finds each device by its token and expects the push
// package's own payload for it.
func TestPushesDevices(t *testing.T) {
	d := &fakeDevices{}
	for i := range 3 {
		d.tokens = append(d.tokens, pushesToken(i))
	}
	for i, tok := range d.tokens {
		if got, ok := d.index("/3/device/" + tok); !ok || got != i || len(tok) != 64 || strings.ToLower(tok) != tok {
			t.Errorf("token %d %q: index %d, %v", i, tok, got, ok)
		}
		if want := push.Payload(pushesAccountID(i), []string{"INBOX"}); !bytes.Equal(pushesBody(i), want) {
			t.Errorf("body %s, push.Payload %s", pushesBody(i), want)
		}
	}
	for _, path := range []string{"/3/device/" + pushesToken(3), "/3/device/" + strings.Repeat("0", 64), "/3/device/xyz", "/" + d.tokens[0]} {
		if i, ok := d.index(path); ok {
			t.Errorf("%s: device %d", path, i)
		}
	}
}

func TestCountingHandler(t *testing.T) {
	var stderr strings.Builder
	h := newCountingHandler("error", &stderr)
	log := slog.New(h).With("user", "u1")
	log.Info("pushed")
	log.Warn("push failed; will retry")
	log.Warn("push failed; will retry")
	log.Error("cannot record")
	got := h.take()
	if len(got) != 2 || got["WARN push failed; will retry"] != 2 || got["ERROR cannot record"] != 1 {
		t.Errorf("counts %v", got)
	}
	if len(h.take()) != 0 {
		t.Error("take did not start again")
	}
	if s := stderr.String(); !strings.Contains(s, "cannot record") || strings.Contains(s, "will retry") || !strings.Contains(s, "user=u1") {
		t.Errorf("printed %q, want the error only, with its attributes", s)
	}
}
