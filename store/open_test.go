package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestReopen(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "xaps.db")
	ctx := t.Context()
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	r := reg("u", tokenA)
	mustRegister(t, s, r)
	st := MailboxState{UIDValidity: 3, UIDNext: 99}
	if err := s.SetMailboxState(ctx, "u", "INBOX", st); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s, err = Open(ctx, path)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer s.Close()
	assertRegs(t, s, registrations(t, s, "u"), []Registration{r})
	if got, err := s.MailboxState(ctx, "u", "INBOX"); err != nil || got != st {
		t.Errorf("MailboxState after reopen = %+v, %v; want %+v", got, err, st)
	}
}

// TestPragmas checks that every pooled connection, not just the first, got
// the durability settings from the DSN. The writer runs with NORMAL between
// batches (a batch with a durable write asks for FULL:
// TestDurableWritesCommitWithFullSync).
func TestPragmas(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := t.Context()
	want := map[string]string{"journal_mode": "wal", "synchronous": "2", "busy_timeout": "5000", "foreign_keys": "1"}
	tests := []struct {
		name      string
		db        *sql.DB
		conns     int
		queryOnly string
	}{
		{"reader", s.r, 3, "1"},
		{"writer", s.w, 1, "0"},
	}
	for _, tt := range tests {
		for i, c := range holdConns(t, tt.db, tt.conns) {
			want["query_only"] = tt.queryOnly
			want["synchronous"] = map[bool]string{true: "1", false: "2"}[tt.db == s.w]
			for name, w := range want {
				var got string
				if err := c.QueryRowContext(ctx, "PRAGMA "+name).Scan(&got); err != nil {
					t.Fatal(err)
				}
				if got != w {
					t.Errorf("%s conn %d: %s = %s, want %s", tt.name, i, name, got, w)
				}
			}
		}
	}
}

// holdConns takes n connections from db at once, so they are distinct.
func holdConns(t *testing.T, db *sql.DB, n int) []*sql.Conn {
	t.Helper()
	var conns []*sql.Conn
	for range n {
		c, err := db.Conn(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		conns = append(conns, c)
	}
	return conns
}

func TestOpenErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	garbage := []byte("this is not a SQLite database, just some text that is long enough\n")
	if err := os.WriteFile(filepath.Join(dir, "garbage.db"), garbage, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "adir"), 0o700); err != nil {
		t.Fatal(err)
	}
	foreign := filepath.Join(dir, "foreign.db")
	execRaw(t, foreign, "CREATE TABLE other (x)")
	if err := os.Chmod(foreign, 0o644); err != nil {
		t.Fatal(err)
	}
	newer := filepath.Join(dir, "newer.db")
	execRaw(t, newer, fmt.Sprintf("PRAGMA application_id = %d; PRAGMA user_version = %d", applicationID, len(migrations)+1))

	tests := []struct {
		name, path, wantMsg string
		wantIs              error
	}{
		{"missing directory", filepath.Join(dir, "nope", "xaps.db"), filepath.Join(dir, "nope") + " does not exist", fs.ErrNotExist},
		{"directory", filepath.Join(dir, "adir"), "is a directory", nil},
		{"parent is a file", filepath.Join(dir, "garbage.db", "xaps.db"), "is not a directory", nil},
		{"not sqlite", filepath.Join(dir, "garbage.db"), "not a database", nil},
		{"other program's database", foreign, "not a xapsproxy database", errNotOurs},
		{"newer schema", newer, "newer than this program supports", nil},
		{"empty path", "", "empty path", errInvalid},
	}
	for _, tt := range tests {
		s, err := Open(t.Context(), tt.path)
		if err == nil {
			s.Close()
			t.Errorf("%s: Open succeeded", tt.name)
			continue
		}
		t.Logf("%s: %v", tt.name, err)
		msg := err.Error()
		if !strings.HasPrefix(msg, "store: open "+tt.path+": ") || !strings.Contains(msg, tt.wantMsg) {
			t.Errorf("%s: error %q should name the path and say %q", tt.name, msg, tt.wantMsg)
		}
		if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
			t.Errorf("%s: error %v is not %v", tt.name, err, tt.wantIs)
		}
		var pe *fs.PathError
		if !errors.As(err, &pe) || pe.Op != "store: open" || pe.Path != tt.path || !strings.Contains(pe.Err.Error(), tt.wantMsg) {
			t.Errorf("%s: error %#v is not a *fs.PathError of Open with the cause inside", tt.name, err)
		}
	}
	if got, err := os.ReadFile(filepath.Join(dir, "garbage.db")); err != nil || string(got) != string(garbage) {
		t.Errorf("failed Open modified the non-SQLite file: %q, %v", got, err)
	}
	if fi, err := os.Stat(foreign); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("failed Open changed the mode of another program's database: %v, %v", fi.Mode().Perm(), err)
	}
	if _, err := os.Stat(filepath.Join(dir, "nope")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Open created the missing directory: %v", err)
	}
}

// execRaw runs q on a database file without going through Open.
func execRaw(t *testing.T, path, q string) {
	t.Helper()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.ExecContext(t.Context(), q); err != nil {
		t.Fatal(err)
	}
}

// TestOddPath checks that characters with a meaning in URIs reach the file
// system unchanged.
func TestOddPath(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "a?b#c%20d")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "x&y=z.db")
	s, err := Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	mustRegister(t, s, reg("u", tokenA))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) == 0 || entries[0].Name() != "x&y=z.db" {
		t.Errorf("directory holds %v, want x&y=z.db", entries)
	}
}

func TestConcurrent(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, s Store) {
		ctx := t.Context()
		const workers, rounds = 20, 10
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() {
				if err := worker(ctx, s, w, rounds); err != nil {
					t.Errorf("worker %d: %v", w, err)
				}
			})
		}
		wg.Wait()

		all, err := s.All(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// Each worker owns one user with its own token and shares tokenA.
		if len(all) != 2*workers {
			t.Errorf("got %d registrations, want %d", len(all), 2*workers)
		}
		users, err := s.DeleteToken(ctx, tokenA)
		if err != nil || len(users) != workers {
			t.Errorf("DeleteToken = %d users, %v; want %d", len(users), err, workers)
		}
	})
}

func worker(ctx context.Context, s Store, w, rounds int) error {
	user := fmt.Sprintf("user%02d", w)
	own := fmt.Sprintf("%064x", w)
	for i := range rounds {
		for _, tok := range []string{own, tokenA} {
			r := reg(user, tok)
			r.Renewed = t0.Add(time.Duration(i) * time.Second)
			if err := s.Register(ctx, r); err != nil {
				return err
			}
		}
		if err := s.RecordPush(ctx, user, own, t0, "200"); err != nil {
			return err
		}
		if err := s.SetMailboxState(ctx, user, "INBOX", MailboxState{UIDValidity: 1, UIDNext: uint32(i)}); err != nil {
			return err
		}
		regs, err := s.Registrations(ctx, user)
		if err != nil {
			return err
		}
		if len(regs) != 2 {
			return fmt.Errorf("round %d: %d registrations, want 2", i, len(regs))
		}
		if _, err := s.All(ctx); err != nil {
			return err
		}
		if _, err := s.Users(ctx); err != nil {
			return err
		}
	}
	return nil
}
