package store

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"
	"time"
)

// Counts counts devices, their users and the pushes owed, of both kinds.
func TestCounts(t *testing.T) {
	forEachStore(t, func(t *testing.T, s Store) {
		ctx := t.Context()
		if c, err := s.Counts(ctx); err != nil || c != (Counts{}) {
			t.Fatalf("Counts of an empty store = %+v, %v", c, err)
		}
		for _, r := range []Registration{reg("alice", tokenA), reg("alice", tokenB), reg("bob", tokenA)} {
			if err := s.Register(ctx, r); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := s.CommitMailbox(ctx, "alice", "INBOX", &MailboxState{UIDValidity: 1, UIDNext: 2}, &OutboxEntry{At: t0}); err != nil {
			t.Fatal(err)
		}
		id, err := s.CommitMailbox(ctx, "alice", "INBOX", nil, &OutboxEntry{Changed: true, At: t0})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.CommitMailbox(ctx, "bob", "INBOX", &MailboxState{UIDValidity: 1, UIDNext: 2}, nil); err != nil {
			t.Fatal(err)
		}
		want := Counts{Registrations: 3, Users: 2, Outbox: 2}
		if c, err := s.Counts(ctx); err != nil || c != want {
			t.Fatalf("Counts = %+v, %v; want %+v", c, err, want)
		}
		if err := s.FinishPushes(ctx, nil, []OutboxEntry{{ID: id, User: "alice", Mailbox: "INBOX", Changed: true}}); err != nil {
			t.Fatal(err)
		}
		want.Outbox = 1
		if c, err := s.Counts(ctx); err != nil || c != want {
			t.Fatalf("Counts after a push finished = %+v, %v; want %+v", c, err, want)
		}
	})
}

// PingWrite fails while another process holds SQLite's write lock (within
// its context's time), succeeds once it is released, and leaves the
// writers' connection usable.
func TestPingWrite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "xaps.db")
	s, err := Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.PingWrite(t.Context()); err != nil {
		t.Fatalf("PingWrite = %v", err)
	}
	other, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	conn, err := other.Conn(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(t.Context(), "BEGIN IMMEDIATE"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	err = s.PingWrite(ctx)
	cancel()
	if err == nil {
		t.Fatal("PingWrite succeeded while another connection held the write lock")
	}
	if _, err := conn.ExecContext(t.Context(), "ROLLBACK"); err != nil {
		t.Fatal(err)
	}
	if err := s.PingWrite(t.Context()); err != nil {
		t.Fatalf("PingWrite after the lock was released = %v", err)
	}
	if err := s.Register(t.Context(), reg("alice", tokenA)); err != nil {
		t.Fatalf("Register after PingWrite = %v", err)
	}
	if got := registrations(t, s, "alice"); len(got) != 1 {
		t.Fatalf("registrations = %d, want 1", len(got))
	}
}
