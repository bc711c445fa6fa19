package watch_test

// How many backend connections watchers open at once, and what happens
// while the backend is away.

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/xapsproxy/xapsproxy/watch"
)

// However many watchers start at once, at most MaxConcurrentLogins
// connections are being opened and logged in at any moment, and every
// watcher gets its turn. Each LOGIN waits for the test, which lets one
// finish at a time once every slot is taken.
func TestConcurrentLoginsAreLimited(t *testing.T) {
	t.Parallel()
	const accounts, limit = 30, 4
	b := startFakeBackend(t, accounts, true)
	e := newFakeEnv(t, b, accounts, func(o *watch.Options) { o.Watch.MaxConcurrentLogins = limit })
	e.run()
	for done := 0; done < accounts; done++ {
		want := min(limit, accounts-done)
		eventually(t, fmt.Sprintf("%d connections opening (%d logged in)", want, done), func() bool {
			opening, _, _ := b.counts()
			return opening >= want
		})
		if _, most, _ := b.counts(); most > limit {
			t.Fatalf("%d connections were opening at once, limit %d", most, limit)
		}
		b.releaseLogin()
	}
	waitStats(t, e.m, "every watcher watching", func(s watch.Stats) bool {
		return s.Watchers[watch.StateWatching] == accounts
	})
	if _, most, _ := b.counts(); most != limit {
		t.Errorf("at most %d connections were opening at once, want the limit, %d", most, limit)
	}
}

// While the backend is away, the watchers wait for it and a single prober
// redials it, instead of every watcher redialling on its own backoff:
// besides the prober's, the backend sees at most MaxConcurrentLogins
// connections (those in flight when the first failure closed the gate).
// Once it is back, every watcher resumes; the outage takes two log lines.
func TestBackendAwayOneProber(t *testing.T) {
	t.Parallel()
	const accounts, limit = 20, 4
	b := startFakeBackend(t, accounts, false)
	var logs *lockedBuilder
	e := newFakeEnv(t, b, accounts, func(o *watch.Options) {
		o.Watch.MaxConcurrentLogins = limit
		o.Logger, logs = newLogCapture(o.Logger)
	})
	e.run()
	waitStats(t, e.m, "every watcher watching", func(s watch.Stats) bool { return s.Watchers[watch.StateWatching] == accounts })

	b.setDown(true)
	b.kill()
	waitStats(t, e.m, "every watcher waiting for the backend, and three probes", func(s watch.Stats) bool {
		return s.BackendUnreachable && s.Watchers[watch.StateUnreachable] == accounts && s.Probes >= 3
	})
	_, _, turnedAway := b.counts()
	if probes := e.m.Stats().Probes; uint64(turnedAway) > limit+probes {
		t.Errorf("the backend turned away %d connections while away, with %d probes: want at most %d besides the probes",
			turnedAway, probes, limit)
	}

	b.setDown(false)
	waitStats(t, e.m, "every watcher watching again", func(s watch.Stats) bool {
		return !s.BackendUnreachable && s.Watchers[watch.StateWatching] == accounts
	})
	all := logs.String()
	for _, line := range []string{"backend unreachable", "backend reachable again"} {
		if n := strings.Count(all, line); n != 1 {
			t.Errorf("%q logged %d times, want once:\n%s", line, n, all)
		}
	}
	if n := strings.Count(all, "watching again"); n < accounts {
		t.Errorf("%d watchers logged that they watch again, want %d", n, accounts)
	}
}

// The first failure after a healthy spell reconnects at once (the gate and
// the login limiter pace it); another one soon after waits the backoff
// (here an hour), so that a session that keeps failing cannot make its
// watcher spin.
func TestSecondFailureBacksOff(t *testing.T) {
	t.Parallel()
	b := startFakeBackend(t, 1, false)
	e := newFakeEnv(t, b, 1, func(o *watch.Options) { o.MinBackoff, o.MaxBackoff = time.Hour, time.Hour })
	e.run()
	waitStats(t, e.m, "the watcher watching", func(s watch.Stats) bool { return s.Watchers[watch.StateWatching] == 1 })
	b.kill()
	// Reconnects is read before the states: watching after the reconnect
	// is the new session.
	waitStats(t, e.m, "the watcher watching again at once", func(s watch.Stats) bool {
		return s.Reconnects == 1 && s.Watchers[watch.StateWatching] == 1
	})
	b.kill()
	waitStats(t, e.m, "the watcher backing off", func(s watch.Stats) bool { return s.Watchers[watch.StateBackoff] == 1 })
}
