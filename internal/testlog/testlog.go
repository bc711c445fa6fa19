// Package testlog gives tests a slog.Logger that writes into the test log
// and fails the test if any of the given secrets ever appears in a log line:
// passwords and authentication payloads must never be logged, at any level.
package testlog

import (
	"log/slog"
	"strings"
	"sync"
	"testing"
)

// New returns a debug-level logger for t. Lines logged after the test ends
// are kept for the secret check but not printed.
func New(t testing.TB, secrets ...string) *slog.Logger {
	w := &writer{t: t, secrets: secrets}
	t.Cleanup(w.finish) // registered first among the caller's cleanups, so it runs after them
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type writer struct {
	t       testing.TB
	secrets []string
	mu      sync.Mutex
	done    bool
	all     strings.Builder
}

func (w *writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.all.Write(p)
	if !w.done {
		w.t.Log(strings.TrimSuffix(string(p), "\n"))
	}
	return len(p), nil
}

func (w *writer) finish() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.done = true
	for _, s := range w.secrets {
		if strings.Contains(w.all.String(), s) {
			w.t.Errorf("a secret (%q) was logged", s)
		}
	}
}
