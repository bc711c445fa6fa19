package cluster

import (
	"context"
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

// dbNow is the database's clock.
func dbNow(t *testing.T, n *node) time.Time {
	t.Helper()
	var now time.Time
	if err := n.pool.QueryRow(context.Background(), "SELECT now()").Scan(&now); err != nil {
		t.Fatal(err)
	}
	return now
}

// waitRenewed waits until a renewal of user's lease began (by the
// database's clock) after since.
func waitRenewed(t *testing.T, n *node, user string, since time.Time) {
	t.Helper()
	eventually(t, "a renewal of "+user, 5*time.Second, func() bool {
		var expires time.Time
		err := n.pool.QueryRow(context.Background(), "SELECT expires FROM xapsproxy_leases WHERE user_name = $1 AND owner = $2", []byte(user), n.c.ID()).Scan(&expires)
		if err != nil {
			t.Fatal(err)
		}
		return expires.After(since.Add(testTTL))
	})
}

// A lease lapsed locally (a renewal too late) but still this instance's in
// the database is not adopted back while its OnLose runs: Owns stays false
// until that OnLose returned, then the user is owned again and OnOwn
// called again.
func TestLapsedLeaseNotOwnedDuringOnLose(t *testing.T) {
	e := newEnv(t, []string{"alice"})
	var n *node
	var owns atomic.Int32
	var first atomic.Bool
	inLose := make(chan struct{})
	release := make(chan struct{})
	ownedInLose := make(chan bool, 2)
	e.opts = func(o *Options) {
		o.OnOwn = func(string) { owns.Add(1) }
		o.OnLose = func(_ context.Context, u string) {
			if !first.CompareAndSwap(false, true) {
				return // the stop's
			}
			ownedInLose <- n.c.Owns(u)
			close(inLose)
			<-release
			ownedInLose <- n.c.Owns(u)
		}
	}
	n = e.start()
	eventually(t, "alice owned", 10*time.Second, func() bool { return n.c.Owns("alice") && owns.Load() == 1 })
	n.c.mu.Lock()
	n.c.owned["alice"].validUntil = time.Now().Add(-time.Millisecond)
	gone := n.c.expireLocked(time.Now())
	n.c.mu.Unlock()
	if gone != 1 {
		t.Fatalf("%d leases lapsed, want 1", gone)
	}
	select {
	case <-inLose:
	case <-time.After(5 * time.Second):
		close(release)
		t.Fatal("no OnLose")
	}
	// Two renewals after OnLose began: the first saw the lease still this
	// instance's; the second began after the first was done with it.
	for range 2 {
		waitRenewed(t, n, "alice", dbNow(t, n))
		if n.c.Owns("alice") {
			t.Error("Owns(alice) true while her OnLose runs")
		}
	}
	close(release)
	if <-ownedInLose || <-ownedInLose {
		t.Error("OnLose saw Owns(alice) true")
	}
	eventually(t, "alice owned again", 5*time.Second, func() bool { return n.c.Owns("alice") && owns.Load() == 2 })
	if st := n.c.Stats(); st.Lost != 1 {
		t.Errorf("Stats: %+v, want 1 lost", st)
	}
}

// A lease renewed only after its local deadline passed (the loop was late)
// was not owned meanwhile: it is lost and owned again, OnLose then OnOwn,
// so the application takes the account up afresh.
func TestLateRenewalLosesAndOwnsAgain(t *testing.T) {
	e := newEnv(t, []string{"alice"})
	var owns, loses atomic.Int32
	e.opts = func(o *Options) {
		o.OnOwn = func(string) { owns.Add(1) }
		o.OnLose = func(context.Context, string) { loses.Add(1) }
	}
	n := e.start()
	eventually(t, "alice owned", 10*time.Second, func() bool { return n.c.Owns("alice") && owns.Load() == 1 })
	n.c.mu.Lock()
	n.c.owned["alice"].validUntil = time.Now().Add(-time.Millisecond)
	n.c.mu.Unlock()
	if n.c.Owns("alice") {
		t.Fatal("Owns(alice) true past her local deadline")
	}
	n.c.wake()
	eventually(t, "OnLose, then OnOwn again", 5*time.Second, func() bool {
		return loses.Load() == 1 && owns.Load() == 2 && n.c.Owns("alice")
	})
	if st := n.c.Stats(); st.Lost != 1 || st.Owned != 1 {
		t.Errorf("Stats: %+v, want 1 lost, 1 owned", st)
	}
}
