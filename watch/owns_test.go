package watch_test

// The hooks for several instances sharing the accounts (package cluster):
// Options.Owns and Manager.Release.

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/xapsproxy/xapsproxy/event"
	"github.com/xapsproxy/xapsproxy/store"
	"github.com/xapsproxy/xapsproxy/watch"
)

// ownedSet is a settable Options.Owns.
type ownedSet struct {
	mu    sync.Mutex
	users map[string]bool
}

func (s *ownedSet) owns(u string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.users[u]
}

func (s *ownedSet) set(u string, v bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.users == nil {
		s.users = map[string]bool{}
	}
	s.users[u] = v
}

// Only owned users get a watcher; Sync of a user no longer owned drops it,
// and Release stops one and waits for it.
func TestOwnsGatesWatchers(t *testing.T) {
	t.Parallel()
	var owned ownedSet
	owned.set("alice", true)
	e := newEnv(t, func(o *watch.Options) { o.Owns = owned.owns })
	e.register("alice", 1, "INBOX")
	e.register("bob", 2, "INBOX")
	e.run()

	e.waitSessions("alice", 1)
	if n := e.m.Owners(); n != 1 {
		t.Fatalf("%d owners with only alice owned, want 1", n)
	}
	if n := e.sessions("bob"); n != 0 {
		t.Fatalf("bob is not owned, yet has %d session(s)", n)
	}

	owned.set("bob", true)
	e.m.Sync("bob")
	e.waitSessions("bob", 1)

	owned.set("bob", false)
	e.m.Sync("bob") // Sync of a user not owned drops its owner
	eventually(t, "bob's owner to go", func() bool { return e.m.Owners() == 1 })
	e.waitSessions("bob", 0)

	owned.set("alice", false)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.m.Release(ctx, "alice"); err != nil {
		t.Fatalf("Release: %v", err)
	}
	if n := e.m.Owners(); n != 0 {
		t.Fatalf("%d owners after Release, want 0", n)
	}
	e.waitSessions("alice", 0)
	if err := e.m.Release(ctx, "nobody"); err != nil {
		t.Errorf("Release of a user not watched: %v", err)
	}
}

// With Dovecot's own events, a released owner applies no hint any more; the
// users still owned go on.
func TestReleaseEndsHints(t *testing.T) {
	t.Parallel()
	var owned ownedSet
	owned.set("alice", true)
	owned.set("bob", true)
	e := newEnv(t, func(o *watch.Options) { o.Owns = owned.owns; o.Source = watch.SourceEvents })
	e.register("alice", 1, "INBOX")
	e.register("bob", 2, "INBOX")
	e.run()
	eventually(t, "two owners", func() bool { return e.m.Owners() == 2 })

	e.m.Hint(event.Hint{User: "alice", Mailbox: "INBOX", What: event.Arrived})
	wantEvents(t, e.rec.wait(t, 1), newEvent("alice", "INBOX"))

	owned.set("alice", false)
	if err := e.m.Release(context.Background(), "alice"); err != nil {
		t.Fatal(err)
	}
	e.m.Hint(event.Hint{User: "alice", Mailbox: "INBOX", What: event.Arrived})
	e.m.Hint(event.Hint{User: "bob", Mailbox: "INBOX", What: event.Arrived})
	// Hints are applied by several workers: bob's event does not prove
	// alice's hint was handled, Owners does (it was dropped at Hint).
	wantEvents(t, e.rec.wait(t, 2), newEvent("alice", "INBOX"), newEvent("bob", "INBOX"))
	if n := e.m.Owners(); n != 1 {
		t.Fatalf("%d owners, want 1 (bob)", n)
	}
}

// With Dovecot's own events, the start's catch-up looks only at owned
// accounts, and an account taken over later is caught up then: mail that
// came while another instance (or nobody) owned it is reported once.
func TestOwnsCatchUpOnTakeOver(t *testing.T) {
	t.Parallel()
	var owned ownedSet
	owned.set("bob", true)
	e := newEnv(t, func(o *watch.Options) { o.Owns = owned.owns; o.Source = watch.SourceEvents })
	for _, u := range []string{"alice", "bob"} {
		cur := e.status(u, "INBOX")
		e.setState(u, "INBOX", store.MailboxState{UIDValidity: cur.UIDValidity, UIDNext: cur.UIDNext})
		e.deliver(u) // missed while nobody watched
	}
	e.register("alice", 1, "INBOX")
	e.register("bob", 2, "INBOX")
	e.run()
	wantEvents(t, e.rec.wait(t, 1), newEvent("bob", "INBOX"))
	// alice has no owner, so nothing can look at her account: her stored
	// state is still the stale one.
	if n := e.m.Owners(); n != 1 {
		t.Fatalf("%d owners, want 1 (bob)", n)
	}
	if st, _ := e.state("alice", "INBOX"); st.UIDNext != e.status("alice", "INBOX").UIDNext-1 {
		t.Fatalf("alice's state moved (%+v) while she was not owned", st)
	}

	owned.set("alice", true)
	e.m.Sync("alice")
	wantEvents(t, e.rec.wait(t, 2), newEvent("bob", "INBOX"), newEvent("alice", "INBOX"))
}

// Between the moment an account stops being owned (Owns false) and its
// Release, its owner commits nothing: a state stored there would hide the
// mail from the next owner's first look, while this instance's pusher drops
// the push.
func TestNotOwnedCommitsNothing(t *testing.T) {
	t.Parallel()
	var owned ownedSet
	owned.set("alice", true)
	owned.set("bob", true)
	e := newEnv(t, func(o *watch.Options) { o.Owns = owned.owns; o.Source = watch.SourceEvents })
	e.register("alice", 1, "INBOX")
	e.register("bob", 2, "INBOX")
	e.run()
	eventually(t, "two owners", func() bool { return e.m.Owners() == 2 })
	before, _ := e.state("alice", "INBOX")

	owned.set("alice", false) // not yet released
	e.deliver("alice")
	cur := e.status("alice", "INBOX")
	e.m.Hint(event.Hint{User: "alice", Mailbox: "INBOX", What: event.Arrived, UIDValidity: cur.UIDValidity, UIDNext: cur.UIDNext})
	e.m.Hint(event.Hint{User: "bob", Mailbox: "INBOX", What: event.Arrived})
	// bob's event shows the workers moved on; alice's hint was applied by
	// one of them or is still queued: Release waits for it either way.
	wantEvents(t, e.rec.wait(t, 1), newEvent("bob", "INBOX"))
	if err := e.m.Release(context.Background(), "alice"); err != nil {
		t.Fatal(err)
	}
	if after, _ := e.state("alice", "INBOX"); after != before {
		t.Fatalf("alice's state moved from %+v to %+v after her account went elsewhere", before, after)
	}
	if n := len(e.rec.snapshot()); n != 1 {
		t.Fatalf("%d events, want bob's alone", n)
	}
}

// CatchUp has an owned account looked at again with Dovecot's events: the
// mail of a hint that never came is found.
func TestCatchUpFindsAMissedHint(t *testing.T) {
	t.Parallel()
	var owned ownedSet
	owned.set("alice", true)
	e := newEnv(t, func(o *watch.Options) { o.Owns = owned.owns; o.Source = watch.SourceEvents })
	e.register("alice", 1, "INBOX")
	e.run()
	eventually(t, "alice's baseline", func() bool { _, ok := e.state("alice", "INBOX"); return ok })
	e.deliver("alice") // its hint is lost
	e.m.CatchUp("alice")
	wantEvents(t, e.rec.wait(t, 1), newEvent("alice", "INBOX"))
}
