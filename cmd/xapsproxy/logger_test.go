package main

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xapsproxy/xapsproxy/config"
)

// TestLoggerFormats: [log] format picks text or JSON lines, level drops
// the lines below it, -debug overrides it, and durations read "1m30s" in
// both formats, in groups and in Logger.With attributes too.
func TestLoggerFormats(t *testing.T) {
	t.Parallel()
	const d = 90 * time.Second
	logAll := func(log *slog.Logger) {
		log = log.With("every", d)
		log.Debug("debug line")
		log.Info("info line", "took", d)
		log.Warn("warn line", slog.Group("retry", "after", d, slog.Group("inner", "wait", d)))
		log.Error("error line", "n", 3)
	}

	var buf bytes.Buffer
	logAll(newConfigLogger(&buf, config.Log{Format: config.LogFormatJSON, Level: config.LogLevelInfo}, false))
	var msgs []string
	for line := range strings.Lines(buf.String()) {
		var obj map[string]any
		if err := json.Unmarshal([]byte(line), &obj); err != nil {
			t.Fatalf("json line does not parse: %v\n%s", err, line)
		}
		if _, ok := obj["level"].(string); !ok {
			t.Errorf("no level key: %s", line)
		}
		if _, ok := obj["time"].(string); !ok {
			t.Errorf("no time key: %s", line)
		}
		msg, _ := obj["msg"].(string)
		msgs = append(msgs, msg)
		if obj["every"] != "1m30s" {
			t.Errorf("every = %#v, want \"1m30s\": %s", obj["every"], line)
		}
		switch msg {
		case "info line":
			if obj["took"] != "1m30s" {
				t.Errorf("took = %#v, want \"1m30s\": %s", obj["took"], line)
			}
		case "warn line":
			retry, _ := obj["retry"].(map[string]any)
			inner, _ := retry["inner"].(map[string]any)
			if retry["after"] != "1m30s" || inner["wait"] != "1m30s" {
				t.Errorf("durations in groups are not \"1m30s\": %s", line)
			}
		case "error line":
			if obj["n"] != 3.0 {
				t.Errorf("n = %#v, want the number 3: %s", obj["n"], line)
			}
		}
	}
	if got, want := strings.Join(msgs, ","), "info line,warn line,error line"; got != want {
		t.Errorf("level info: lines %q, want %q\n%s", got, want, buf.String())
	}

	buf.Reset()
	logAll(newConfigLogger(&buf, config.Log{Format: config.LogFormatText, Level: config.LogLevelWarn}, false))
	text := buf.String()
	if strings.Contains(text, "info line") || strings.Contains(text, "debug line") || !strings.Contains(text, "error line") {
		t.Errorf("level warn kept the wrong lines:\n%s", text)
	}
	for _, want := range []string{`level=WARN msg="warn line" every=1m30s retry.after=1m30s retry.inner.wait=1m30s`} {
		if !strings.Contains(text, want) {
			t.Errorf("text lacks %q:\n%s", want, text)
		}
	}

	buf.Reset()
	logAll(newConfigLogger(&buf, config.Log{Format: config.LogFormatText, Level: config.LogLevelError}, true))
	if text := buf.String(); !strings.Contains(text, `level=DEBUG msg="debug line" every=1m30s`) || !strings.Contains(text, "took=1m30s") {
		t.Errorf("-debug did not override level error:\n%s", text)
	}

	buf.Reset()
	logAll(newConfigLogger(&buf, config.Log{Format: config.LogFormatJSON, Level: config.LogLevelError}, false))
	if n := strings.Count(buf.String(), "\n"); n != 1 || !strings.Contains(buf.String(), `"msg":"error line"`) {
		t.Errorf("level error: %d lines, want the error line only:\n%s", n, buf.String())
	}
}

// lineWatch is serve's stderr: it keeps what is written and closes seen
// when a line containing want has been written.
type lineWatch struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	want string
	seen chan struct{}
}

func (w *lineWatch) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if w.seen != nil && strings.Contains(w.buf.String(), w.want) {
		close(w.seen)
		w.seen = nil
	}
	return len(p), nil
}

func (w *lineWatch) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// TestServeLogJSON: serve with [log] format = "json" writes every line,
// from start-up to shutdown, as a JSON object with level and msg.
func TestServeLogJSON(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.set("log.format", "json")
	cfg := f.write()
	stderr := &lineWatch{want: `"msg":"listening"`, seen: make(chan struct{})}
	seen := stderr.seen
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- serveCmd(ctx, []string{"-config", cfg}, stderr) }()
	select {
	case <-seen:
	case err := <-done:
		t.Fatalf("serve ended before listening: %v\n%s", err, stderr.String())
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("serve: %v\n%s", err, stderr.String())
	}
	var msgs []string
	for line := range strings.Lines(stderr.String()) {
		var obj map[string]any
		if err := json.Unmarshal([]byte(line), &obj); err != nil {
			t.Fatalf("serve wrote a line that is not JSON: %v\n%s", err, line)
		}
		level, _ := obj["level"].(string)
		msg, _ := obj["msg"].(string)
		if level == "" || msg == "" {
			t.Errorf("line without level or msg: %s", line)
		}
		msgs = append(msgs, msg)
	}
	if !strings.Contains(strings.Join(msgs, "\n"), "shutting down") {
		t.Errorf("no shutdown line in:\n%s", stderr.String())
	}
	// The test's APNs certificate is valid for a day: serve warns at start.
	if !strings.Contains(strings.Join(msgs, "\n"), "the APNs certificate expires soon") {
		t.Errorf("no warning about the APNs certificate's expiry in:\n%s", stderr.String())
	}
}
