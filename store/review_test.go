package store

// Tests written in review of the group commit and the outbox.

import (
	"context"
	"database/sql"
	"errors"
	"testing"
	"time"
)

// queued waits until n writes wait behind the running batch.
func queued(t *testing.T, s *SQLite, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		s.group.mu.Lock()
		q := len(s.group.queue)
		s.group.mu.Unlock()
		if q >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d writes queued; want %d", q, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// When the shared transaction is lost after a CommitMailbox's own work ran
// (here another write in the batch ends the transaction, as SQLITE_FULL,
// SQLITE_IOERR or a failed COMMIT do), CommitMailbox returns the id its
// INSERT got together with the error. The owner then notifies with that id
// (watch/owner.go commit), although the row was rolled back; and since the
// AUTOINCREMENT counter was rolled back too, the next entry gets the same
// id, so two different events share one id in the Pusher's refs.
func TestReviewFailedCommitMailboxReturnsNoID(t *testing.T) {
	s := newStore(t)
	ctx := t.Context()
	hold := make(chan struct{})
	leader := make(chan error, 1)
	go func() {
		leader <- s.write(ctx, func(ctx context.Context, tx *sql.Tx) error { <-hold; return nil })
	}()
	queued(t, s, 0)
	time.Sleep(10 * time.Millisecond) // the leader is in its batch
	type result struct {
		id  int64
		err error
	}
	got := make(chan result, 1)
	go func() {
		id, err := s.CommitMailbox(ctx, "alice", "INBOX", &MailboxState{UIDValidity: 1, UIDNext: 2}, &OutboxEntry{At: t0})
		got <- result{id, err}
	}()
	queued(t, s, 1)
	breaker := make(chan error, 1)
	go func() {
		breaker <- s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
			if _, err := tx.ExecContext(ctx, `ROLLBACK`); err != nil { // the transaction is gone
				return err
			}
			return errors.New("disk full")
		})
	}()
	queued(t, s, 2)
	close(hold)
	if err := <-leader; err != nil {
		t.Fatal(err)
	}
	<-breaker
	r := <-got
	if r.err == nil {
		t.Fatal("CommitMailbox succeeded although its transaction was lost")
	}
	if out, _ := s.Outbox(ctx); len(out) != 0 {
		t.Fatalf("outbox = %+v; want the lost entry absent", out)
	}
	next, err := s.CommitMailbox(ctx, "bob", "INBOX", nil, &OutboxEntry{At: t0})
	if err != nil {
		t.Fatal(err)
	}
	if r.id != 0 {
		t.Errorf("failed CommitMailbox returned id %d with %v; want 0 (the next entry, bob's, got id %d)", r.id, r.err, next)
	}
}

// A queued write ignores its caller's context: a caller with a deadline
// (the owner's storeTimeout, under the owner's mutex) waits as long as the
// batches ahead of it take.
func TestReviewQueuedWriteHonoursCallerDeadline(t *testing.T) {
	s := newStore(t)
	hold := make(chan struct{})
	go s.write(t.Context(), func(ctx context.Context, tx *sql.Tx) error { <-hold; return nil })
	time.Sleep(10 * time.Millisecond)
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	done := make(chan error, 1)
	go func() {
		_, err := s.CommitMailbox(ctx, "alice", "INBOX", nil, &OutboxEntry{At: t0})
		done <- err
	}()
	select {
	case err := <-done:
		t.Logf("returned after %v: %v", time.Since(start), err)
	case <-time.After(time.Second):
		close(hold)
		<-done
		t.Fatalf("CommitMailbox with a 50ms deadline still waiting after 1s")
	}
	close(hold)
}
