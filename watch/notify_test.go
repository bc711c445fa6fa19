package watch_test

// The NOTIFY source against the real Dovecot: one connection per account
// for every registered mailbox, and IDLE where a backend has no NOTIFY.

import (
	"testing"

	"github.com/xapsproxy/xapsproxy/event"
	"github.com/xapsproxy/xapsproxy/watch"
)

func notifySource(o *watch.Options) { o.Source = watch.SourceAuto }

func TestNotifyNewMailInEveryRegisteredMailbox(t *testing.T) {
	t.Parallel()
	e := newEnv(t, notifySource)
	e.createMailbox("alice", "Notes")
	e.createMailbox("alice", "Junk")
	e.register("alice", 1, "INBOX", "Notes")
	e.run()
	// A baseline for an INBOX nothing was delivered to yet, too.
	e.waitBaseline("alice", "INBOX")
	e.waitBaseline("alice", "Notes")
	if s := e.m.Stats(); s.NotifySessions != 1 || s.IdleSessions != 0 {
		t.Fatalf("%d NOTIFY and %d IDLE sessions, want one NOTIFY", s.NotifySessions, s.IdleSessions)
	}

	e.deliver("alice")
	wantEvents(t, e.rec.wait(t, 1), newEvent("alice", "INBOX"))
	e.appendTo("alice", "Junk") // not registered
	e.appendTo("alice", "Notes")
	wantEvents(t, e.rec.wait(t, 2), newEvent("alice", "INBOX"), newEvent("alice", "Notes"))
	if n := e.sessions("alice"); n != 1 {
		t.Errorf("%d backend sessions of alice, want one for both mailboxes", n)
	}
}

// A flag change in any registered mailbox is a change; a mailbox
// registered later is watched on the same connection.
func TestNotifyChangesAndNewMailboxes(t *testing.T) {
	t.Parallel()
	e := newEnv(t, notifySource)
	e.createMailbox("alice", "Notes")
	e.appendTo("alice", "Notes")
	e.register("alice", 1, "INBOX")
	e.run()
	e.waitBaseline("alice", "INBOX")

	e.register("alice", 2, "Notes")
	e.m.Sync("alice")
	e.waitBaseline("alice", "Notes")
	e.d.Doveadm(t, "flags", "add", "-u", "alice", `\Seen`, "mailbox", "Notes", "all")
	changed := event.Event{User: "alice", Mailbox: "Notes", Kind: event.KindChanged}
	wantEvents(t, e.rec.wait(t, 1), changed)
	e.appendTo("alice", "Notes")
	wantEvents(t, e.rec.wait(t, 2), changed, newEvent("alice", "Notes"))
	if n := e.sessions("alice"); n != 1 {
		t.Errorf("%d backend sessions of alice, want one", n)
	}
}

// A backend without NOTIFY is watched with IDLE under SourceAuto, after
// one look at its capabilities.
func TestNotifyFallsBackToIdle(t *testing.T) {
	t.Parallel()
	b := startFakeBackend(t, 2, false)
	e := newFakeEnv(t, b, 2, func(o *watch.Options) { o.Source = watch.SourceAuto })
	e.run()
	eventually(t, "both accounts in IDLE", func() bool {
		s := e.m.Stats()
		return s.Watchers[watch.StateWatching] == 2 && s.IdleSessions == 2 && s.NotifySessions == 0
	})
}
