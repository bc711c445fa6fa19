package push

import (
	"sync"
	"sync/atomic"
	"time"
)

// workerIdle is how long a worker waits for another push before it exits,
// so that the stacks a burst grew are given back soon after it.
const workerIdle = 5 * time.Second

// workers run the pushes Run starts. A worker is kept while pushes keep
// coming, so that a push does not start a new goroutine and grow its stack
// again through the HTTP/2 client (7% of the push stage's CPU at 10 000
// pushes a second); it exits after workerIdle without one. There are never
// fewer workers than pushes started and not finished, never more than
// MaxConcurrent (the size of the queue).
type workers struct {
	queue chan func()   // never full: Run starts at most its size at once
	alive *atomic.Int32 // workers running or waiting (the Pusher's, for Stats)
	wg    sync.WaitGroup
}

func newWorkers(size int, alive *atomic.Int32) *workers {
	return &workers{queue: make(chan func(), size), alive: alive}
}

// do queues f; inflight is how many pushes are started and not finished,
// f included.
func (w *workers) do(f func(), inflight int) {
	w.queue <- f
	// After the send: a worker that gave up waiting before it has
	// decremented alive, and looks at the queue once more after that.
	if int(w.alive.Load()) < inflight {
		w.alive.Add(1)
		w.wg.Add(1)
		go w.run()
	}
}

// close lets the workers run what is queued and exit; it waits for them.
func (w *workers) close() {
	close(w.queue)
	w.wg.Wait()
}

func (w *workers) run() {
	defer w.wg.Done()
	idle := time.NewTimer(workerIdle)
	defer idle.Stop()
	for {
		select {
		case f, ok := <-w.queue:
			if !ok {
				w.alive.Add(-1)
				return
			}
			f()
		case <-idle.C:
			w.alive.Add(-1)
			select {
			case f, ok := <-w.queue: // queued just before alive went down
				if !ok {
					return
				}
				w.alive.Add(1)
				f()
			default:
				return
			}
		}
		idle.Reset(workerIdle)
	}
}
