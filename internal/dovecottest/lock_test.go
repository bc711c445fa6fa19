package dovecottest

import (
	"sync"
	"testing"
	"time"
)

// TestExclusiveLockIsNotStarved: while instances keep starting with
// overlapping shared locks (as the tests of several packages do), an
// exclusive taker still gets the lock once those running at the time are
// done, instead of waiting until nobody starts one any more.
func TestExclusiveLockIsNotStarved(t *testing.T) {
	stop := make(chan struct{})
	var sharers sync.WaitGroup
	for range 32 {
		sharers.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				release := lockInstances(t, false)
				time.Sleep(5 * time.Millisecond) // an instance running: the load, not a synchronization
				release()
			}
		})
	}
	got := make(chan func(), 1)
	go func() { got <- lockInstances(t, true) }()
	select {
	case release := <-got:
		release()
	case <-time.After(10 * time.Second):
		t.Error("the exclusive lock did not come within 10 s while shared ones kept coming")
	}
	close(stop)
	sharers.Wait()
}
