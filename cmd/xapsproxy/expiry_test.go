package main

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestWarnExpiry(t *testing.T) {
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name     string
		notAfter time.Time
		want     string // "" = nothing logged
	}{
		{"far", now.Add(31 * 24 * time.Hour), ""},
		{"token key", time.Time{}, ""},
		{"soon", now.Add(10*24*time.Hour + time.Hour), `level=WARN msg="the APNs certificate expires soon: renew it before then, or pushes stop" expires=2026-12-12T13:00:00Z days_left=10`},
		{"expired", now.Add(-time.Hour), `level=ERROR msg="the APNs certificate has expired: APNs refuses every push until it is renewed" expired=2026-12-02T11:00:00Z`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			warnExpiry(slog.New(slog.NewTextHandler(&buf, nil)), tc.notAfter, now)
			got := buf.String()
			if tc.want == "" && got != "" || tc.want != "" && !strings.Contains(got, tc.want) {
				t.Errorf("logged %q; want %q", got, tc.want)
			}
			if tc.want != "" && !strings.Contains(got, "xapsproxy cert FILE") {
				t.Errorf("the line does not say how to check: %q", got)
			}
		})
	}
}
