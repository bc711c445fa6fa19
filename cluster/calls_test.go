package cluster

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"
)

// A stop does not wait for a backlog of slow OnOwn (pusher.Claim against a
// slow database): those not started yet are skipped, and Run returns
// within stopTimeout.
func TestStopSkipsQueuedOnOwn(t *testing.T) {
	var users []string
	for i := range 2000 {
		users = append(users, fmt.Sprintf("u%04d", i))
	}
	e := newEnv(t, users)
	var ran atomic.Int32
	e.opts = func(o *Options) {
		o.OnOwn = func(string) {
			ran.Add(1)
			time.Sleep(500 * time.Millisecond) // a slow OnOwn, not a synchronization
		}
	}
	n := e.start()
	eventually(t, "every account owned", 20*time.Second, func() bool { return len(n.c.Owned()) == len(users) })
	start := time.Now()
	n.cancel()
	n.cancel = nil
	select {
	case err := <-n.done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(stopTimeout + 10*time.Second):
		t.Fatal("Run did not return")
	}
	took := time.Since(start)
	n.pool.Close()
	t.Logf("Run returned %v after its ctx was done; %d of %d OnOwn ran", took.Round(time.Millisecond), ran.Load(), len(users))
	if took > stopTimeout {
		t.Errorf("Run returned %v after its ctx was done, more than stopTimeout (%v)", took, stopTimeout)
	}
	if r := ran.Load(); r >= int32(len(users)) {
		t.Errorf("%d OnOwn ran, want those queued at the stop skipped", r)
	}
}
