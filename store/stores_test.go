package store

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/xapsproxy/xapsproxy/internal/pgtest"
)

// TestMain runs the package's PostgreSQL server (internal/pgtest).
func TestMain(m *testing.M) { pgtest.Main(m) }

// forEachStore runs body, the contract of Store, against each
// implementation: a fresh SQLite file and a fresh PostgreSQL database.
func forEachStore(t *testing.T, body func(t *testing.T, s Store)) {
	t.Helper()
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		body(t, newStore(t))
	})
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		body(t, newPostgres(t))
	})
}

// forEachReopenable is forEachStore for a body that closes its store and
// opens it again: open opens the same store (file or database) each time,
// and the body closes what it opened.
func forEachReopenable(t *testing.T, body func(t *testing.T, open func() Store)) {
	t.Helper()
	opener := func(t *testing.T, open func() (Store, error)) func() Store {
		return func() Store {
			t.Helper()
			s, err := open()
			if err != nil {
				t.Fatalf("open: %v", err)
			}
			return s
		}
	}
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		path := filepath.Join(t.TempDir(), "xaps.db")
		body(t, opener(t, func() (Store, error) { return Open(t.Context(), path) }))
	})
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		url := pgtest.New(t)
		body(t, opener(t, func() (Store, error) { return OpenPostgres(t.Context(), url) }))
	})
}

// newPostgres opens a store on a fresh database, closed at cleanup (before
// pgtest drops the database).
func newPostgres(t testing.TB) *Postgres {
	t.Helper()
	return openPostgres(t, pgtest.New(t))
}

// openPostgres opens one more store (one more instance) on url, closed at
// cleanup.
func openPostgres(t testing.TB, url string) *Postgres {
	t.Helper()
	p, err := OpenPostgres(t.Context(), url)
	if err != nil {
		t.Fatalf("OpenPostgres: %v", err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return p
}

// stored is tm as s gives it back: in UTC, and to the microsecond in
// PostgreSQL (timestamptz; pgx truncates). SQLite keeps nanoseconds.
func stored(s Store, tm time.Time) time.Time {
	if _, ok := s.(*Postgres); ok {
		tm = tm.Truncate(time.Microsecond)
	}
	if tm.IsZero() {
		return tm
	}
	return tm.UTC()
}
