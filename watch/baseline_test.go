package watch_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
)

// Every registration takes a baseline of its new mailboxes on a backend
// connection of its own, holding one of the login slots all accounts
// share. A user who sends registration after registration from many
// sessions (each naming mailboxes that do not exist, which never get a
// baseline) must not hold them all: an account's baselines run one at a
// time, and other accounts' logins still find a slot.
func TestBaselinesOfOneAccountRunOneAtATime(t *testing.T) {
	t.Parallel()
	b := startFakeBackend(t, 2, false)
	e := newFakeEnv(t, b, 0, nil)
	e.run()
	var names []string
	for i := range 200 {
		names = append(names, fmt.Sprintf("nx%d", i))
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if err := e.m.Baseline(context.Background(), fakeUser(1), names); err != nil {
				t.Errorf("Baseline: %v", err)
			}
		})
	}
	wg.Wait()
	if n := b.mostActive(); n != 1 {
		t.Errorf("%d backend sessions at once for one account's baselines, want 1", n)
	}
}
