package store

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"sync"
	"time"
)

// Group commit: writes that callers make at the same time share one
// transaction, so one commit (and for durable writes one fsync) takes them
// all. Under load
// this multiplies the write rate by the number of writers waiting; alone, a
// write costs what it did. There is no goroutine of its own: the first
// caller to find no batch running becomes the leader, runs the batch with
// everything queued so far, and hands leadership to the first caller that
// queued meanwhile. If a write fails, the batch runs again with each write in
// its own savepoint, so that one that fails is rolled back alone and the
// others still commit.
const (
	maxGroup     = 1000             // writes per transaction at most
	groupTimeout = 30 * time.Second // for a batch, whatever the callers' contexts
)

type groupWrite struct {
	fn      func(ctx context.Context, tx *sql.Tx) error
	relaxed bool // may be lost on a power cut (see writeRelaxed)
	err     error
	done    chan struct{} // closed when err is final
	lead    chan struct{} // closed when this write's caller is to lead the next batch
}

type group struct {
	mu      sync.Mutex
	queue   []*groupWrite
	running bool // a leader is running a batch
}

// write runs fn in a transaction shared with other writes made meanwhile and
// returns once that transaction committed or fn's own work was rolled back.
// fn must only use tx; its ctx is the batch's, not the caller's. fn may run
// twice (again in a savepoint when a write beside it failed), so it must
// only set what it returns, not accumulate. A caller
// whose ctx ends while its write is still queued withdraws it and gets
// ctx's error; once a batch has taken the write, it is done or failed,
// never abandoned half way.
func (s *SQLite) write(ctx context.Context, fn func(ctx context.Context, tx *sql.Tx) error) error {
	return s.writeWith(ctx, false, fn)
}

// writeRelaxed is write for what may be lost on a power cut, as long as it
// is lost whole: its transaction is committed without an fsync when every
// write in the batch is relaxed (WAL with synchronous=NORMAL: durable
// across a crash of the process, and on a power cut the database comes
// back with a prefix of the transactions committed). Mailbox state and
// the outbox entry it causes are written so: lost together, the catch-up
// after the start finds the mail again. A durable write in the same batch,
// or after it, fsyncs the WAL up to it too.
func (s *SQLite) writeRelaxed(ctx context.Context, fn func(ctx context.Context, tx *sql.Tx) error) error {
	return s.writeWith(ctx, true, fn)
}

func (s *SQLite) writeWith(ctx context.Context, relaxed bool, fn func(ctx context.Context, tx *sql.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	w := &groupWrite{fn: fn, relaxed: relaxed, done: make(chan struct{}), lead: make(chan struct{})}
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
		case <-ctx.Done():
			if g.withdraw(w) {
				return ctx.Err()
			}
			select { // taken into a batch, or to lead the next one
			case <-w.done:
				return w.err
			case <-w.lead:
			}
		}
	}
	s.lead()
	<-w.done // w is in the batch: the leader's own write is always its first
	return w.err
}

// withdraw takes w out of the queue, unless a batch has taken it or it has
// been made the next leader (which must lead, or the queue would stall).
func (g *group) withdraw(w *groupWrite) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	i := slices.Index(g.queue, w)
	if i < 0 {
		return false
	}
	select {
	case <-w.lead:
		return false
	default:
	}
	g.queue = slices.Delete(g.queue, i, i+1)
	return true
}

// lead runs one batch with what is queued, then hands leadership to the
// first write queued meanwhile, whatever happens to the batch.
func (s *SQLite) lead() {
	g := &s.group
	g.mu.Lock()
	n := min(len(g.queue), maxGroup)
	batch := slices.Clone(g.queue[:n])
	g.queue = slices.Delete(g.queue, 0, n)
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		if len(g.queue) > 0 {
			close(g.queue[0].lead)
		} else {
			g.running = false
		}
		g.mu.Unlock()
	}()
	s.runBatch(batch)
}

func (s *SQLite) runBatch(batch []*groupWrite) {
	ctx, cancel := context.WithTimeout(context.Background(), groupTimeout)
	defer cancel()
	fail := func(err error) {
		for _, w := range batch {
			if w.err == nil {
				w.err = err
			}
		}
	}
	defer func() {
		r := recover()
		if r != nil {
			fail(fmt.Errorf("a write panicked: %v", r))
		}
		for _, w := range batch {
			close(w.done)
		}
		if r != nil {
			panic(r)
		}
	}()
	// The writer runs with synchronous=NORMAL (see open); a batch with a
	// durable write is committed with FULL, which fsyncs the WAL up to it.
	// Only batches use the writer, one at a time, so no other write can
	// run with the setting meant for this one.
	durable := false
	for _, w := range batch {
		durable = durable || !w.relaxed
	}
	if durable {
		if _, err := s.w.ExecContext(ctx, `PRAGMA synchronous = FULL`); err != nil {
			fail(err)
			return
		}
		defer func() {
			_, _ = s.w.ExecContext(ctx, `PRAGMA synchronous = NORMAL`) // if it fails, the next batches fsync: slower, not less safe
		}()
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		fail(err)
		return
	}
	defer func() { _ = tx.Rollback() }() // after Commit, a no-op
	// The fast path: every write in one go. Writes seldom fail, and a
	// savepoint costs two statements per write.
	failed := false
	for _, w := range batch {
		if w.err = w.fn(ctx, tx); w.err != nil {
			failed = true
			break
		}
	}
	if !failed {
		s.commit(ctx, tx, fail)
		return
	}
	if len(batch) == 1 {
		return // its error is set; the deferred Rollback undoes its work
	}
	// One failed: run them again, each in its own savepoint, so that only
	// the failing ones are rolled back.
	if err := tx.Rollback(); err != nil {
		fail(err)
		return
	}
	tx2, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		fail(err)
		return
	}
	tx = tx2
	for _, w := range batch {
		w.err = nil
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
	s.commit(ctx, tx, fail)
}

// commit commits tx; if that fails, it makes sure the writer's connection
// is left with no transaction open (SQLite may keep one after a failed
// COMMIT), or every later write would fail to begin.
func (s *SQLite) commit(ctx context.Context, tx *sql.Tx, fail func(error)) {
	err := tx.Commit()
	if err == nil {
		return
	}
	fail(err)
	_, _ = s.w.ExecContext(context.WithoutCancel(ctx), `ROLLBACK`) // "no transaction is active" is the usual answer
}
