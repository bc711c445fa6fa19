package credential

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/xapsproxy/xapsproxy/internal/testlog"
	"github.com/xapsproxy/xapsproxy/store"
	"github.com/xapsproxy/xapsproxy/watch"
)

// countingStore is the real SQLite store, counting writes.
type countingStore struct {
	*store.SQLite
	sets, deletes atomic.Int32
}

func (c *countingStore) SetCredential(ctx context.Context, user string, sealed []byte) error {
	c.sets.Add(1)
	return c.SQLite.SetCredential(ctx, user, sealed)
}

func (c *countingStore) DeleteCredential(ctx context.Context, user string, sealed []byte) (bool, error) {
	c.deletes.Add(1)
	return c.SQLite.DeleteCredential(ctx, user, sealed)
}

type env struct {
	dbPath string
	st     *countingStore
	creds  *Store
	logs   *syncLog
	synced *syncLog
}

// syncLog collects strings from several goroutines.
type syncLog struct {
	mu    sync.Mutex
	items []string
}

func (l *syncLog) add(s string) { l.mu.Lock(); l.items = append(l.items, s); l.mu.Unlock() }
func (l *syncLog) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.items...)
}

func (l *syncLog) Write(p []byte) (int, error) { l.add(string(p)); return len(p), nil }

func newEnv(t *testing.T, secrets ...string) *env {
	t.Helper()
	dir := t.TempDir()
	e := &env{dbPath: filepath.Join(dir, "xaps.db"), logs: &syncLog{}, synced: &syncLog{}}
	db, err := store.Open(t.Context(), e.dbPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	e.st = &countingStore{SQLite: db}
	key, err := LoadKey(filepath.Join(dir, "secret.key"))
	if err != nil {
		t.Fatal(err)
	}
	log := testlog.New(t, secrets...)
	e.creds = New(Options{Key: key, Store: e.st, Logger: log, OnChange: e.synced.add})
	return e
}

func TestCaptureFor(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "alicepw-1", "alicepw-2")
	ctx := t.Context()
	if _, _, err := e.creds.For(ctx, "alice"); !errors.Is(err, watch.ErrNoCredential) {
		t.Fatalf("For before any login: %v, want ErrNoCredential", err)
	}
	e.creds.Captured("alice", "alicepw-1")
	login, pw, err := e.creds.For(ctx, "alice")
	if err != nil || login != "alice" || pw != "alicepw-1" {
		t.Fatalf("For = %q, %q, %v", login, pw, err)
	}
	// The same password again, as every phone session brings: no write,
	// no change.
	for range 3 {
		e.creds.Captured("alice", "alicepw-1")
	}
	if n := e.st.sets.Load(); n != 1 {
		t.Errorf("%d writes for one password, want 1", n)
	}
	e.creds.Captured("alice", "alicepw-2")
	if _, pw, _ := e.creds.For(ctx, "alice"); pw != "alicepw-2" {
		t.Errorf("after a new password For gives %q", pw)
	}
	if got := e.synced.all(); strings.Join(got, ",") != "alice,alice" {
		t.Errorf("OnChange calls %q, want alice twice", got)
	}
	if _, err := e.creds.Capture(ctx, "alice", nil); err == nil {
		t.Error("Capture took an empty password")
	}
	if _, err := e.creds.Capture(ctx, "", []byte("x")); err == nil {
		t.Error("Capture took an empty user")
	}
}

func TestRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "oldpw", "newpw")
	var buf syncLog
	e.creds = New(Options{Key: e.creds.opts.Key, Store: e.st, Logger: slogTo(&buf), OnChange: e.synced.add})
	ctx := t.Context()
	e.creds.Captured("alice", "oldpw")
	e.creds.Captured("bob", "bobpw")

	// A refusal of a password that is no longer the stored one keeps the
	// newer one.
	e.creds.Captured("alice", "newpw")
	e.creds.Refused(ctx, "alice", "alice", "oldpw")
	if _, pw, err := e.creds.For(ctx, "alice"); err != nil || pw != "newpw" {
		t.Fatalf("after refusing the old password For = %q, %v", pw, err)
	}
	if n := e.st.deletes.Load(); n != 0 {
		t.Errorf("%d deletes for a stale refusal", n)
	}

	e.creds.Refused(ctx, "alice", "alice", "newpw")
	if _, _, err := e.creds.For(ctx, "alice"); !errors.Is(err, watch.ErrNoCredential) {
		t.Fatalf("For after refusal: %v, want ErrNoCredential", err)
	}
	if _, err := e.st.Credential(ctx, "alice"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the refused credential is still stored: %v", err)
	}
	if _, pw, err := e.creds.For(ctx, "bob"); err != nil || pw != "bobpw" {
		t.Errorf("bob's credential: %q, %v", pw, err)
	}
	lines := strings.Join(buf.all(), "")
	if !strings.Contains(lines, "captured password refused by the backend; waiting for the user's next login") || !strings.Contains(lines, "user=alice") {
		t.Errorf("log lacks the refusal line:\n%s", lines)
	}
	for _, pw := range []string{"oldpw", "newpw", "bobpw"} {
		if strings.Contains(lines, pw) {
			t.Errorf("log holds a password:\n%s", lines)
		}
	}
	// Refused again (another watcher's late answer): nothing happens.
	e.creds.Refused(ctx, "alice", "alice", "newpw")
	// A new login after the refusal stores again and says so.
	e.creds.Captured("alice", "newpw")
	if _, pw, err := e.creds.For(ctx, "alice"); err != nil || pw != "newpw" {
		t.Errorf("after the next login For = %q, %v", pw, err)
	}
}

// A credential sealed under another key (the key file was replaced) is as
// good as none: For waits for the next login, which stores a new one.
func TestOtherKey(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "alicepw")
	ctx := t.Context()
	other, err := LoadKey(filepath.Join(t.TempDir(), "other.key"))
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := other.Seal("alice", []byte("alicepw"))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.st.SQLite.SetCredential(ctx, "alice", sealed); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.creds.For(ctx, "alice"); !errors.Is(err, watch.ErrNoCredential) {
		t.Fatalf("For with another key's credential: %v, want ErrNoCredential", err)
	}
	if changed, err := e.creds.Capture(ctx, "alice", []byte("alicepw")); err != nil || !changed {
		t.Fatalf("Capture over an unreadable credential: %v, %v", changed, err)
	}
	if _, pw, err := e.creds.For(ctx, "alice"); err != nil || pw != "alicepw" {
		t.Fatalf("For = %q, %v", pw, err)
	}
	// A row moved to another user does not open as theirs.
	if err := e.st.SQLite.SetCredential(ctx, "mallory", mustCredential(t, e.st, "alice")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.creds.For(ctx, "mallory"); !errors.Is(err, watch.ErrNoCredential) {
		t.Fatalf("alice's row as mallory's: %v, want ErrNoCredential", err)
	}
}

func mustCredential(t *testing.T, st *countingStore, user string) []byte {
	t.Helper()
	b, err := st.Credential(t.Context(), user)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The database file, its WAL included, never holds a password in plain
// text.
func TestNoPlaintextInDatabase(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	pws := []string{"plaintext-needle-one", "plaintext-needle-two"}
	for _, pw := range pws {
		e.creds.Captured("alice", pw)
	}
	for _, suffix := range []string{"", "-wal"} {
		data, err := os.ReadFile(e.dbPath + suffix)
		if err != nil {
			t.Fatal(err)
		}
		for _, pw := range pws {
			if bytes.Contains(data, []byte(pw)) {
				t.Errorf("%s holds a password in plain text", filepath.Base(e.dbPath+suffix))
			}
		}
	}
}

func TestConcurrentUse(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := t.Context()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			user := fmt.Sprintf("user%d", g%4) // two goroutines per user
			for i := range 25 {
				pw := fmt.Sprintf("pw-%d-%d", g, i%3)
				e.creds.Captured(user, pw)
				if _, got, err := e.creds.For(ctx, user); err != nil && !errors.Is(err, watch.ErrNoCredential) {
					t.Errorf("For: %v", err)
				} else if err == nil && !strings.HasPrefix(got, "pw-") {
					t.Errorf("For gave %q", got)
				}
				if i%5 == 0 {
					e.creds.Refused(ctx, user, user, pw)
				}
			}
		})
	}
	wg.Wait()
	// Every user's credential, when there is one, is one that was captured.
	for u := range 4 {
		user := fmt.Sprintf("user%d", u)
		if _, pw, err := e.creds.For(ctx, user); err == nil && !strings.HasPrefix(pw, "pw-") {
			t.Errorf("%s: %q", user, pw)
		}
	}
}

func slogTo(w *syncLog) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// What a login costs the session in captured mode: with the password
// already stored (every phone session) and with a new one (a write).
func BenchmarkCaptured(b *testing.B) {
	db, err := store.Open(b.Context(), filepath.Join(b.TempDir(), "xaps.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	key, err := LoadKey(filepath.Join(b.TempDir(), "secret.key"))
	if err != nil {
		b.Fatal(err)
	}
	s := New(Options{Key: key, Store: db})
	b.Run("same", func(b *testing.B) {
		s.Captured("alice", "alicepw")
		for b.Loop() {
			s.Captured("alice", "alicepw")
		}
	})
	b.Run("new", func(b *testing.B) {
		i := 0
		for b.Loop() {
			i++
			s.Captured("alice", fmt.Sprintf("pw-%d", i))
		}
	})
}
