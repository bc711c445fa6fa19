package watch

import "context"

// limiter bounds the backend connections being opened and logged in at
// once, over all watchers (watch.max_concurrent_logins): without it, every
// watcher dials at the same moment at startup and when the backend comes
// back, and the backend's listen queue overflows. It is a counting
// semaphore; goroutines waiting for a slot are served in order.
type limiter chan struct{}

func newLimiter(n int) limiter { return make(limiter, n) }

// acquire takes a slot, waiting for one until ctx is done.
func (l limiter) acquire(ctx context.Context) error {
	select {
	case l <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// release gives back a slot taken by acquire.
func (l limiter) release() { <-l }
