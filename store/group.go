package store

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
	"time"
)

// Group commit: writes that callers make at the same time share one
// transaction, so one fsync (synchronous=FULL) commits them all. Under load
// this multiplies the write rate by the number of writers waiting; alone, a
// write costs what it did. There is no goroutine of its own: the first
// caller to find no batch running becomes the leader, runs the batch with
// everything queued so far, and hands leadership to the first caller that
// queued meanwhile. Each write runs in its own savepoint, so one that fails
// is rolled back alone and the others still commit.
const (
	maxGroup     = 1000             // writes per transaction at most
	groupTimeout = 30 * time.Second // for a batch, whatever the callers' contexts
)

type groupWrite struct {
	fn   func(ctx context.Context, tx *sql.Tx) error
	err  error
	done chan struct{} // closed when err is final
	lead chan struct{} // closed when this write's caller is to lead the next batch
}

type group struct {
	mu      sync.Mutex
	queue   []*groupWrite
	running bool // a leader is running a batch
}

// write runs fn in a transaction shared with other writes made meanwhile and
// returns once that transaction committed or fn's own work was rolled back.
// fn must only use tx; its ctx is the batch's, not the caller's: a write,
// once queued, is done or failed, never abandoned half way (a caller whose
// ctx is already done is refused before it queues).
func (s *SQLite) write(ctx context.Context, fn func(ctx context.Context, tx *sql.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	w := &groupWrite{fn: fn, done: make(chan struct{}), lead: make(chan struct{})}
	g := &s.group
	g.mu.Lock()
	g.queue = append(g.queue, w)
	leader := !g.running
	g.running = true
	g.mu.Unlock()
	if !leader {
		select {
		case <-w.done:
			return w.err
		case <-w.lead:
		}
	}
	g.mu.Lock()
	n := min(len(g.queue), maxGroup)
	batch := g.queue[:n:n]
	g.queue = g.queue[n:]
	g.mu.Unlock()

	s.runBatch(batch)

	g.mu.Lock()
	if len(g.queue) > 0 {
		close(g.queue[0].lead)
	} else {
		g.running = false
	}
	g.mu.Unlock()
	<-w.done // w is in batch: the leader's own write is always its first
	return w.err
}

func (s *SQLite) runBatch(batch []*groupWrite) {
	ctx, cancel := context.WithTimeout(context.Background(), groupTimeout)
	defer cancel()
	defer func() {
		for _, w := range batch {
			close(w.done)
		}
	}()
	fail := func(err error) {
		for _, w := range batch {
			if w.err == nil {
				w.err = err
			}
		}
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		fail(err)
		return
	}
	defer tx.Rollback() // after Commit, a no-op
	if len(batch) == 1 {
		if err := batch[0].fn(ctx, tx); err != nil {
			batch[0].err = err
			return
		}
		fail(tx.Commit())
		return
	}
	for _, w := range batch {
		if _, err := tx.ExecContext(ctx, `SAVEPOINT w`); err != nil {
			fail(err)
			return
		}
		if err := w.fn(ctx, tx); err != nil {
			w.err = err
			if _, rerr := tx.ExecContext(ctx, `ROLLBACK TO w`); rerr != nil {
				fail(fmt.Errorf("roll back a failed write: %w", rerr))
				return
			}
		}
		if _, err := tx.ExecContext(ctx, `RELEASE w`); err != nil {
			fail(err)
			return
		}
	}
	fail(tx.Commit())
}
