package store

// The group commit runs the writes made at the same time in one shared
// transaction. These tests hold it to what a caller is promised when that
// transaction is lost and when the caller gives up while its write waits.

import (
	"context"
	"database/sql"
	"errors"
	"sync"
	"testing"
	"time"
)

// queued waits until n writes wait behind the running batch.
func queued(t *testing.T, s *SQLite, n int) {
	t.Helper()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	deadline := time.NewTimer(5 * time.Second)
	defer deadline.Stop()
	for {
		s.group.mu.Lock()
		q := len(s.group.queue)
		s.group.mu.Unlock()
		if q >= n {
			return
		}
		select {
		case <-tick.C:
		case <-deadline.C:
			t.Fatalf("%d writes queued after 5s; want %d", q, n)
		}
	}
}

// holdBatch starts a write that leads a batch and stays in it until the
// returned release is called; it returns once that batch is running, so
// that writes made next queue behind it. release waits for the write to
// end and returns its error.
func holdBatch(t *testing.T, s *SQLite) (release func() error) {
	t.Helper()
	entered := make(chan struct{})
	hold := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- s.write(t.Context(), func(ctx context.Context, tx *sql.Tx) error {
			close(entered)
			<-hold
			return nil
		})
	}()
	select {
	case <-entered:
	case <-time.After(5 * time.Second):
		t.Fatal("the holding write did not start within 5s")
	}
	var once sync.Once
	var err error
	release = func() error {
		once.Do(func() {
			close(hold)
			err = <-done
		})
		return err
	}
	t.Cleanup(func() { _ = release() })
	return release
}

// A CommitMailbox whose shared transaction is lost after its own work ran
// (here another write in the batch ends the transaction, as SQLITE_FULL,
// SQLITE_IOERR or a failed COMMIT do) fails with no outbox id: the row its
// INSERT made was rolled back, and so was the AUTOINCREMENT counter, so the
// next entry gets that id again. The caller must not hand the id on (the
// owner notifies the Pusher with it), or two events would share one id.
func TestFailedCommitMailboxReturnsNoID(t *testing.T) {
	s := newStore(t)
	ctx := t.Context()
	release := holdBatch(t, s)
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
	if err := release(); err != nil {
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

// A write still queued behind a running batch returns as soon as its
// caller's context ends, with the context's error, and is never run: a
// caller with a deadline (the owner's storeTimeout, under the owner's
// mutex) does not wait as long as the batches ahead of it take.
func TestQueuedWriteHonoursItsCallersContext(t *testing.T) {
	s := newStore(t)
	release := holdBatch(t, s)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := s.CommitMailbox(ctx, "alice", "INBOX", nil, &OutboxEntry{At: t0})
		done <- err
	}()
	queued(t, s, 1)
	cancel() // as the deadline passing does
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("CommitMailbox = %v; want the context's error", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("CommitMailbox whose context ended is still waiting for the batch ahead of it after 5s")
	}
	if err := release(); err != nil {
		t.Fatal(err)
	}
	if out, err := s.Outbox(t.Context()); err != nil || len(out) != 0 {
		t.Fatalf("outbox = %+v, %v; want the withdrawn write never run", out, err)
	}
}
