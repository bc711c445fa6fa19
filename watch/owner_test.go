package watch_test

// The owner's decisions, fed by hints as Dovecot's own events would send
// them (SourceEvents), and the looks that complete them: the baseline taken
// at registration and the catch-up after a start.

import (
	"context"
	"testing"
	"time"

	"github.com/xapsproxy/xapsproxy/event"
	"github.com/xapsproxy/xapsproxy/store"
	"github.com/xapsproxy/xapsproxy/watch"
)

func eventsSource(o *watch.Options) { o.Source = watch.SourceEvents }

// waitOwner waits until the manager has an owner for n accounts.
func (e *env) waitOwners(n int) {
	e.t.Helper()
	eventually(e.t, "owners", func() bool { return e.m.Owners() == n })
}

func TestHintsArrivalsPushOnceEach(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(o *watch.Options) { o.Source = watch.SourceEvents; o.CatchUpRate = 1e-9 })
	e.register("alice", 1, "INBOX", "Notes")
	e.run()
	e.waitOwners(1)
	// The catch-up after the start (one look per 10^9 s, the first at
	// once) sees no mail: it only sets baselines.
	eventually(t, "the catch-up", func() bool { return e.m.Stats().CatchUps == 1 })

	e.m.Hint(event.Hint{User: "alice", Mailbox: "INBOX", What: event.Arrived, UIDValidity: 7, UIDNext: 5})
	wantEvents(t, e.rec.wait(t, 1), newEvent("alice", "INBOX"))
	e.waitState("alice", "INBOX", store.MailboxState{UIDValidity: 7, UIDNext: 5})

	// The same arrival again (a retried post) and an older one are not.
	e.m.Hint(event.Hint{User: "alice", Mailbox: "INBOX", What: event.Arrived, UIDValidity: 7, UIDNext: 5})
	e.m.Hint(event.Hint{User: "alice", Mailbox: "INBOX", What: event.Arrived, UIDValidity: 7, UIDNext: 3})
	// Nor is a mailbox nobody registered, nor a user nobody registered.
	e.m.Hint(event.Hint{User: "alice", Mailbox: "Junk", What: event.Arrived, UIDValidity: 7, UIDNext: 9})
	e.m.Hint(event.Hint{User: "bob", Mailbox: "INBOX", What: event.Arrived, UIDValidity: 7, UIDNext: 9})
	// Notes, named as the backend names it, is; and flags are "changed".
	e.m.Hint(event.Hint{User: "alice", Mailbox: "Notes", What: event.Arrived, UIDValidity: 8, UIDNext: 2})
	e.m.Hint(event.Hint{User: "alice", Mailbox: "inbox", What: event.Flags})
	got := e.rec.wait(t, 3)
	if len(got) != 3 || !containsEvent(got, newEvent("alice", "Notes")) ||
		!containsEvent(got, event.Event{User: "alice", Mailbox: "INBOX", Kind: event.KindChanged}) {
		t.Fatalf("events %v", got)
	}
	// The statistics count them by kind as they are reported.
	if s := e.m.Stats(); s.EventsNew != 2 || s.EventsChanged != 1 || s.Events != 3 {
		t.Errorf("events counted: %d new, %d changed, %d in all; want 2, 1, 3", s.EventsNew, s.EventsChanged, s.Events)
	}
	// The hint workers run in parallel: the Junk hint may still be on its
	// way.
	waitStats(t, e.m, "one unregistered and one unwatched hint", func(s watch.Stats) bool {
		return s.HintsUnregistered == 1 && s.HintsUnwatched == 1
	})
	// A hint the manager has applied after all of the above proves that
	// the duplicates gave nothing.
	e.m.Hint(event.Hint{User: "alice", Mailbox: "INBOX", What: event.Arrived, UIDValidity: 7, UIDNext: 6})
	if got := e.rec.wait(t, 4); len(got) != 4 || got[3] != newEvent("alice", "INBOX") {
		t.Fatalf("events %v", got)
	}
	// SourceEvents opens no connection per account.
	if n := e.sessions("alice"); n != 0 {
		t.Errorf("%d backend sessions of alice, want none", n)
	}
}

// The user a hint names is matched after Backend.CanonicalUser, as stored
// registrations are (the phone's Alice@Example.COM is alice@example.com).
func TestHintsMatchTheCanonicalUser(t *testing.T) {
	t.Parallel()
	e := newEnv(t, eventsSource)
	e.register("alice@example.com", 1, "INBOX")
	e.run()
	e.waitOwners(1)
	eventually(t, "the catch-up", func() bool { return e.m.Stats().CatchUps == 1 })
	st := e.status("alice", "INBOX")
	e.m.Hint(event.Hint{User: "Alice@Example.COM", Mailbox: "INBOX", What: event.Arrived, UIDValidity: st.UIDValidity, UIDNext: st.UIDNext + 1})
	wantEvents(t, e.rec.wait(t, 1), newEvent("alice@example.com", "INBOX"))
}

// Names the devices registered in modified UTF-7 match the UTF-8 names a
// backend's events carry.
func TestHintsMatchModifiedUTF7Names(t *testing.T) {
	t.Parallel()
	e := newEnv(t, eventsSource)
	e.register("alice", 1, "INBOX", "Entw&APw-rfe")
	e.run()
	e.waitOwners(1)
	eventually(t, "the catch-up", func() bool { return e.m.Stats().CatchUps == 1 })
	e.m.Hint(event.Hint{User: "alice", Mailbox: "Entwürfe", What: event.Arrived, UIDValidity: 1, UIDNext: 2})
	wantEvents(t, e.rec.wait(t, 1), newEvent("alice", "Entw&APw-rfe"))
}

// After a start, every registered mailbox is looked at once: what came
// while the proxy was away is pushed, the rest only gets its state.
func TestCatchUpAfterStart(t *testing.T) {
	t.Parallel()
	e := newEnv(t, eventsSource)
	e.createMailbox("alice", "Notes")
	e.deliver("alice")
	e.register("alice", 1, "INBOX", "Notes")
	e.register("bob", 2, "INBOX")
	e.setState("alice", "INBOX", e.status("alice", "INBOX"))
	e.setState("alice", "Notes", e.status("alice", "Notes"))
	e.deliver("alice") // while the proxy is away
	e.run()
	wantEvents(t, e.rec.wait(t, 1), newEvent("alice", "INBOX"))
	e.waitBaseline("bob", "INBOX")
	eventually(t, "two catch-ups", func() bool { return e.m.Stats().CatchUps == 2 })
	if got := e.rec.snapshot(); len(got) != 1 {
		t.Fatalf("events %v, want only alice's INBOX", got)
	}
}

// Baseline takes the state of newly registered mailboxes, and only of
// those with none stored.
func TestBaseline(t *testing.T) {
	t.Parallel()
	e := newEnv(t, eventsSource)
	e.createMailbox("alice", "Notes")
	e.deliver("alice")
	old := store.MailboxState{UIDValidity: 1, UIDNext: 1}
	e.setState("alice", "Notes", old)
	if err := e.m.Baseline(context.Background(), "alice", []string{"INBOX", "Notes", "Missing"}); err != nil {
		t.Fatal(err)
	}
	if got, want := mustState(e, "alice", "INBOX"), e.status("alice", "INBOX"); got != want {
		t.Errorf("INBOX baseline %+v, want %+v", got, want)
	}
	if got := mustState(e, "alice", "Notes"); got != old {
		t.Errorf("Notes state %+v changed, want %+v kept", got, old)
	}
	if _, ok := e.state("alice", "Missing"); ok {
		t.Error("a mailbox the backend does not have got a state")
	}
	if got := e.rec.snapshot(); len(got) != 0 {
		t.Errorf("a baseline notified %v", got)
	}
}

func mustState(e *env, user, mailbox string) store.MailboxState {
	e.t.Helper()
	st, ok := e.state(user, mailbox)
	if !ok {
		e.t.Fatalf("no state for %s/%s", user, mailbox)
	}
	return st
}

func containsEvent(list []event.Event, ev event.Event) bool {
	for _, x := range list {
		if x == ev {
			return true
		}
	}
	return false
}

// Every CatchUpInterval the accounts are looked at again: mail whose
// event never came (here: none is sent) is found.
func TestCatchUpRepeats(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(o *watch.Options) { o.Source = watch.SourceEvents; o.CatchUpInterval = 200 * time.Millisecond })
	e.register("alice", 1, "INBOX")
	e.run()
	e.waitBaseline("alice", "INBOX")
	e.deliver("alice") // its event is lost: nothing posts it
	wantEvents(t, e.rec.wait(t, 1), newEvent("alice", "INBOX"))
}

// The catch-up's looks that fail in a row are counted, and the refused
// logins behind them: with a wrong master password, every one.
func TestCatchUpFailuresInARow(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(o *watch.Options) {
		eventsSource(o)
		o.Watch = masterLogin(o.Watch.MasterUser, "wrongpw")
	})
	for i, u := range []string{"alice", "bob", "carol"} {
		e.register(u, i+1, "INBOX")
	}
	e.run()
	s := waitStats(t, e.m, "three failed catch-ups", func(s watch.Stats) bool { return s.CatchUpFailures == 3 })
	if s.CatchUpFailingInRow != 3 || s.LoginsRefused != 3 || s.LoginsFailed != 0 || s.CatchUps != 0 {
		t.Errorf("after three refused catch-ups: %d failing in a row, %d logins refused, %d failed otherwise, %d catch-ups ok; want 3, 3, 0, 0",
			s.CatchUpFailingInRow, s.LoginsRefused, s.LoginsFailed, s.CatchUps)
	}
}
