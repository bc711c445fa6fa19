package watch_test

import (
	"testing"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/xapsproxy/xapsproxy/event"
	"github.com/xapsproxy/xapsproxy/watch"
)

// The IDLE connection reports flag changes and expunges in its mailbox as
// changes, and the flags Dovecot sends along with new mail as nothing more
// than the new mail.
func TestIdleReportsFlagChangesAndExpunges(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	for range 3 {
		e.deliver("alice")
	}
	e.register("alice", 1, "INBOX")
	e.run()
	e.waitBaseline("alice", "INBOX")
	eventually(t, "the watcher in IDLE", func() bool { return e.m.Stats().Watchers[watch.StateWatching] == 1 })

	c, err := imapclient.DialInsecure(e.d.IMAPAddr, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Login("alice", e.d.Password("alice")).Wait(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	seen := &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagSeen}, Silent: true}
	if err := c.Store(imap.SeqSetNum(1, 2, 3), seen, nil).Close(); err != nil {
		t.Fatal(err)
	}
	changed := event.Event{User: "alice", Mailbox: "INBOX", Kind: event.KindChanged}
	got := e.rec.wait(t, 1)
	if got[0] != changed {
		t.Fatalf("events %v, want a change", got)
	}

	// New mail: one new-mail event, and no change for its flags. The
	// expunge that follows proves the watcher has moved on: everything
	// after the delivery is the new mail and the expunge's change.
	n := len(e.rec.snapshot())
	e.deliver("alice")
	eventually(t, "the new mail", func() bool { return containsEvent(e.rec.snapshot()[n:], newEvent("alice", "INBOX")) })
	e.d.Doveadm(t, "expunge", "-u", "alice", "mailbox", "INBOX", "uid", "4")
	// The STORE's flag changes (one FETCH per message) may still have
	// been coming in when n was taken.
	after := func() []event.Event {
		got := e.rec.snapshot()[n:]
		for len(got) > 0 && got[0] == changed {
			got = got[1:]
		}
		return got
	}
	eventually(t, "the expunge", func() bool { return len(after()) >= 2 })
	wantEvents(t, after(), newEvent("alice", "INBOX"), changed)
}
