package watch_test

// How many backend connections watchers open at once, and what happens
// while the backend is away.

import (
	"fmt"
	"testing"

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
