package store

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

// A batch whose fast path failed runs again in a new transaction; if that
// cannot begin (the database closed, SQLITE_BUSY from another process past
// busy_timeout, the batch's time up), every write of it fails, and nothing
// panics.
func TestBatchRerunThatCannotBeginFailsItsWrites(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(t.Context(), filepath.Join(dir, "xaps.db"))
	if err != nil {
		t.Fatal(err)
	}
	mk := func(fn func(context.Context, *sql.Tx) error) *groupWrite {
		return &groupWrite{fn: fn, relaxed: true, done: make(chan struct{}), lead: make(chan struct{})}
	}
	w1 := mk(func(ctx context.Context, tx *sql.Tx) error {
		s.w.Close() // stands in for any cause of the second BeginTx failing
		return errors.New("first write fails")
	})
	w2 := mk(func(ctx context.Context, tx *sql.Tx) error { return nil })
	defer func() {
		if r := recover(); r != nil {
			t.Fatalf("runBatch panicked: %v", r)
		}
	}()
	s.runBatch([]*groupWrite{w1, w2})
	if w2.err == nil {
		t.Fatal("second write reported committed")
	}
}

// A version 2 database (before the outbox) keeps its registrations, mailbox
// state and credentials through migration 3.
func TestMigrationKeepsVersion2Data(t *testing.T) {
	path := filepath.Join(t.TempDir(), "xaps.db")
	execRaw(t, path, strings.Join(migrations[:2], "\n")+`;
		PRAGMA user_version = 2; PRAGMA application_id = 2019651699;
		INSERT INTO registrations (user, device_token, account_id, subtopic, mailboxes, version, topic)
			VALUES ('alice', '`+tokenA+`', 'a', 's', '["INBOX"]', 2, 't');
		INSERT INTO mailbox_state VALUES ('alice', 'INBOX', 7, 42), ('bob', 'Notes', 1, 2);
		INSERT INTO credentials VALUES ('alice', x'01', 5);`)
	s, err := Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := t.Context()
	st, err := s.MailboxState(ctx, "alice", "INBOX")
	if err != nil || st.UIDValidity != 7 || st.UIDNext != 42 {
		t.Fatalf("state = %+v, %v", st, err)
	}
	if st, err := s.MailboxState(ctx, "bob", "Notes"); err != nil || st.UIDNext != 2 {
		t.Fatalf("bob state = %+v, %v", st, err)
	}
	regs, err := s.All(ctx)
	if err != nil || len(regs) != 1 {
		t.Fatalf("regs = %v, %v", regs, err)
	}
	if c, err := s.Credential(ctx, "alice"); err != nil || len(c) != 1 {
		t.Fatalf("cred = %v, %v", c, err)
	}
	// An entry for a mailbox with state: state kept (coalesce).
	id, err := s.CommitMailbox(ctx, "alice", "INBOX", nil, &OutboxEntry{At: t0})
	if err != nil || id != 1 {
		t.Fatalf("commit: %d %v", id, err)
	}
	if st, err := s.MailboxState(ctx, "alice", "INBOX"); err != nil || st.UIDNext != 42 {
		t.Fatalf("state after entry = %+v, %v", st, err)
	}
	// An entry for a mailbox never looked at: no state.
	if _, err := s.CommitMailbox(ctx, "alice", "New", nil, &OutboxEntry{At: t0, Changed: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.MailboxState(ctx, "alice", "New"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("state of entry-only row: %v", err)
	}
}

// CommitMailbox with neither state nor entry changes nothing.
func TestCommitMailboxWithNothingKeepsState(t *testing.T) {
	forEachStore(t, func(t *testing.T, s Store) {
		ctx := t.Context()
		if err := s.SetMailboxState(ctx, "alice", "INBOX", MailboxState{UIDValidity: 1, UIDNext: 5}); err != nil {
			t.Fatal(err)
		}
		if id, err := s.CommitMailbox(ctx, "alice", "INBOX", nil, nil); err != nil || id != 0 {
			t.Fatalf("CommitMailbox(nil, nil) = %d, %v; want 0, nil", id, err)
		}
		if st, err := s.MailboxState(ctx, "alice", "INBOX"); err != nil || st.UIDNext != 5 {
			t.Fatalf("state after CommitMailbox(nil, nil) = %+v, %v", st, err)
		}
	})
}
