package push

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/xapsproxy/xapsproxy/store"
)

// Bounds of what the recorder keeps while the store does not answer.
const (
	maxRecords    = 100_000          // push outcomes; beyond, the oldest kept, the newest dropped
	finalFlush    = 5 * time.Second  // at shutdown, to write what is left
	recorderRetry = 2 * time.Second  // after a failed write, before the next
	recorderMax   = 30 * time.Second // cap of the retry delay
)

// recorder writes push outcomes and finished outbox entries to the store in
// batches: whatever accumulated while the previous write ran goes in the
// next, so under load one transaction carries thousands of them, and the
// Pusher's goroutines never wait for the store.
type recorder struct {
	store  store.Store
	logger *slog.Logger

	mu      sync.Mutex
	records []store.PushRecord
	done    []store.OutboxEntry // outbox entries to remove
	kick    chan struct{}       // 1-buffered: "something to write"
	// seq counts the outbox entries handed to finished; written is the
	// seq up to which they are in the store, and written is closed and
	// replaced each time it grows (for Release's waitWritten).
	seq, wrote uint64
	written    chan struct{}
}

func newRecorder(st store.Store, logger *slog.Logger) *recorder {
	return &recorder{store: st, logger: logger, kick: make(chan struct{}, 1), written: make(chan struct{})}
}

// record queues the outcome of one push.
func (r *recorder) record(rec store.PushRecord) {
	r.mu.Lock()
	if len(r.records) < maxRecords {
		r.records = append(r.records, rec)
	}
	r.mu.Unlock()
	r.wake()
}

// finished queues an outbox entry whose pushes are all answered.
func (r *recorder) finished(e store.OutboxEntry) {
	r.mu.Lock()
	r.done = append(r.done, e)
	r.seq++
	r.mu.Unlock()
	r.wake()
}

func (r *recorder) wake() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// run writes until ctx is done, then writes what is left (for at most
// finalFlush) and returns.
func (r *recorder) run(ctx context.Context) {
	failures := 0
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finalFlush)
			defer cancel()
			if err := r.flush(fctx); err != nil {
				r.logger.Error("cannot record push outcomes at shutdown; pushes still in the outbox will be sent again", "error", err)
			}
			return
		case <-r.kick:
		}
		if err := r.flush(ctx); err != nil {
			if ctx.Err() != nil {
				continue // shutting down: the final flush tries again
			}
			failures++
			if failures == 1 {
				r.logger.Error("cannot record push outcomes; will try again", "error", err)
			}
			wait := min(recorderRetry<<min(failures-1, 8), recorderMax)
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
			case <-t.C:
			}
			t.Stop()
			r.wake()
			continue
		}
		if failures > 0 {
			r.logger.Info("recording push outcomes again", "failures", failures)
			failures = 0
		}
	}
}

// flush writes what is queued in one FinishPushes; on failure it is queued
// again.
func (r *recorder) flush(ctx context.Context) error {
	r.mu.Lock()
	records, done, upto := r.records, r.done, r.seq
	r.records, r.done = nil, nil
	r.mu.Unlock()
	if len(records) == 0 && len(done) == 0 {
		r.wroteUpTo(upto)
		return nil
	}
	err := r.store.FinishPushes(ctx, records, done)
	if err == nil {
		r.wroteUpTo(upto)
	} else {
		r.mu.Lock()
		r.done = append(done, r.done...)
		keep := max(0, min(len(records), maxRecords-len(r.records)))
		r.records = append(records[:keep], r.records...)
		r.mu.Unlock()
	}
	return err
}

// wroteUpTo notes that the entries up to seq are in the store. Only the
// recorder's goroutine flushes, so the flushes come in order.
func (r *recorder) wroteUpTo(seq uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if seq > r.wrote {
		r.wrote = seq
		close(r.written)
		r.written = make(chan struct{})
	}
}

// queued is the count of outbox entries handed to finished so far.
func (r *recorder) queued() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.seq
}

// waitWritten waits until the outbox entries up to seq are in the store.
func (r *recorder) waitWritten(ctx context.Context, seq uint64) error {
	for {
		r.mu.Lock()
		wrote, ch := r.wrote, r.written
		r.mu.Unlock()
		if wrote >= seq {
			return nil
		}
		r.wake()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// pending is how many writes are queued.
func (r *recorder) pending() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.records) + len(r.done)
}
