package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/xapsproxy/xapsproxy/cluster"
	"github.com/xapsproxy/xapsproxy/event"
	"github.com/xapsproxy/xapsproxy/internal/testlog"
)

// relayWorld stands for the cluster (who owns what, whether PostgreSQL
// answers) and records what reached the owner and this instance's manager.
type relayWorld struct {
	mu        sync.Mutex
	mine      map[string]bool
	down      bool
	tries     int      // calls of publish
	published []string // users whose hint reached the owner
	applied   []string // users whose hint this instance applied
	now       time.Time
}

func (w *relayWorld) owns(u string) bool { w.mu.Lock(); defer w.mu.Unlock(); return w.mine[u] }
func (w *relayWorld) apply(h event.Hint) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.applied = append(w.applied, h.User)
}
func (w *relayWorld) publish(_ context.Context, h event.Hint) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.tries++
	if len(h.Mailbox) > 100 {
		return fmt.Errorf("hint: %w", cluster.ErrTooLarge)
	}
	if w.down {
		return errors.New("dial tcp 127.0.0.1:5432: connection refused")
	}
	w.published = append(w.published, h.User)
	return nil
}
func (w *relayWorld) set(f func()) { w.mu.Lock(); defer w.mu.Unlock(); f() }
func (w *relayWorld) clock() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.now
}

func newRelayWorld(t *testing.T) (*relayWorld, *hintRelay) {
	w := &relayWorld{mine: map[string]bool{"alice": true}, now: time.Unix(1e9, 0)}
	r := newHintRelay(w.owns, w.apply, w.publish, testlog.New(t))
	r.now = w.clock
	return w, r
}

func hintFor(user string) event.Hint {
	return event.Hint{User: user, Mailbox: "INBOX", What: event.Arrived, UIDNext: 5}
}

// A hint is applied here for an account this instance owns, and handed to
// the owner otherwise; one that can never fit is not held.
func TestHintRelayHands(t *testing.T) {
	t.Parallel()
	w, r := newRelayWorld(t)
	r.hand(hintFor("alice"))
	r.hand(hintFor("bob"))
	huge := hintFor("carol")
	huge.Mailbox = string(make([]byte, 200))
	r.hand(huge)
	if !slices.Equal(w.applied, []string{"alice"}) || !slices.Equal(w.published, []string{"bob"}) || r.pending() != 0 {
		t.Fatalf("applied %v, published %v, %d held", w.applied, w.published, r.pending())
	}
}

// PostgreSQL away: hints are held, in order, and handed over once it
// answers again; a hint for an account this instance owns by then is
// applied here. Held longer than relayFor, a hint is given up.
func TestHintRelayRetries(t *testing.T) {
	t.Parallel()
	w, r := newRelayWorld(t)
	ctx := context.Background()
	w.set(func() { w.down = true })
	for _, u := range []string{"bob", "carol", "dave"} {
		r.hand(hintFor(u))
	}
	// Only the first waited for the database: the others joined it.
	if w.tries != 1 || r.pending() != 3 {
		t.Fatalf("while down: %d tries, %d held", w.tries, r.pending())
	}
	r.retry(ctx)
	if r.pending() != 3 || len(w.published) != 0 {
		t.Fatalf("while down: %d held, published %v", r.pending(), w.published)
	}
	w.set(func() { w.down = false; w.mine["carol"] = true; w.now = w.now.Add(relayEvery) })
	r.hand(hintFor("erin")) // behind those held, in order
	r.retry(ctx)
	if !slices.Equal(w.published, []string{"bob", "dave", "erin"}) || !slices.Equal(w.applied, []string{"carol"}) || r.pending() != 0 {
		t.Fatalf("after: published %v, applied %v, %d held", w.published, w.applied, r.pending())
	}

	w.set(func() { w.down = true })
	r.hand(hintFor("frank"))
	w.set(func() { w.now = w.now.Add(relayFor) })
	r.retry(ctx)
	if r.pending() != 0 {
		t.Fatalf("%d held after %v", r.pending(), relayFor)
	}
	w.set(func() { w.down = false })
	r.retry(ctx)
	if slices.Contains(w.published, "frank") {
		t.Fatal("a hint given up was handed over later")
	}
}

// The relay holds at most relayMaxHeld hints, dropping the oldest.
func TestHintRelayBounded(t *testing.T) {
	t.Parallel()
	w, r := newRelayWorld(t)
	w.set(func() { w.down = true })
	for i := range relayMaxHeld + 10 {
		r.hand(hintFor(fmt.Sprintf("u%d", i)))
	}
	if n := r.pending(); n != relayMaxHeld {
		t.Fatalf("%d held, want %d", n, relayMaxHeld)
	}
	w.set(func() { w.down = false })
	r.retry(context.Background())
	if w.published[0] != "u10" || len(w.published) != relayMaxHeld {
		t.Fatalf("published %d, first %s; want %d from u10", len(w.published), w.published[0], relayMaxHeld)
	}
}
