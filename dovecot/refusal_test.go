package dovecot

import (
	"bytes"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestRefusalLogAtMostOncePerInterval(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	now := time.Unix(1_700_000_000, 0)
	l := refusalLog{log: slog.New(slog.NewTextHandler(&out, nil)), every: time.Minute, now: func() time.Time { return now }}
	r := httptest.NewRequest("POST", Path, nil)
	for range 5 {
		l.note(r, 401, "wrong secret")
		now = now.Add(10 * time.Second)
	}
	// 50 s after the first line: still suppressed. 60 s: the next line,
	// counting the four in between.
	now = now.Add(10 * time.Second)
	l.note(r, 400, "bad JSON")
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines, want 2:\n%s", len(lines), out.String())
	}
	if !strings.Contains(lines[0], "status=401") || !strings.Contains(lines[0], "refused_unlogged=0") ||
		!strings.Contains(lines[1], "status=400") || !strings.Contains(lines[1], "refused_unlogged=4") {
		t.Errorf("lines:\n%s", out.String())
	}
}
