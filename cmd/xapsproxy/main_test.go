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
