package watch_test

// Behaviour of the watch manager against a real Dovecot: baselines,
// catch-up, mailboxes other than INBOX, convergence on Sync, probing.
// Outages, shutdown and logging are in lifecycle_test.go.

import (
	"context"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/xapsproxy/xapsproxy/store"
	"github.com/xapsproxy/xapsproxy/watch"
)

// The first sight of a mailbox only stores a baseline; the next delivery is
// reported once and advances the stored UIDNEXT.
func TestFirstSightSetsBaselineThenReportsNewMail(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	e.deliver("alice") // existing mail is not news
	e.register("alice", 1, "INBOX")
	e.run()

	base := e.waitBaseline("alice", "INBOX")
	if base.UIDNext != 2 {
		t.Fatalf("baseline UIDNEXT = %d, want 2 (one message was already there)", base.UIDNext)
	}
	// The watcher reports before it stores, so anything reported for the
	// first sight would already be here.
	wantEvents(t, e.rec.snapshot())

	e.deliver("alice")
	wantEvents(t, e.rec.wait(t, 1), newEvent("alice", "INBOX"))
	e.waitState("alice", "INBOX", store.MailboxState{UIDValidity: base.UIDValidity, UIDNext: 3})
	wantEvents(t, e.rec.snapshot(), newEvent("alice", "INBOX"))
}

// Mail that arrived while nobody watched is reported once when the watcher
// starts, however many messages it was, and the store catches up.
func TestCatchUpReportsMissedMailOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	cur := e.status("alice", "INBOX")
	e.setState("alice", "INBOX", store.MailboxState{UIDValidity: cur.UIDValidity, UIDNext: 1})
	e.deliver("alice")
	e.deliver("alice")
	e.register("alice", 1, "INBOX")
	e.run()

	wantEvents(t, e.rec.wait(t, 1), newEvent("alice", "INBOX"))
	e.waitState("alice", "INBOX", store.MailboxState{UIDValidity: cur.UIDValidity, UIDNext: 3})
	wantEvents(t, e.rec.snapshot(), newEvent("alice", "INBOX"))

	// And the watcher carries on from there: one more delivery, one more
	// event, and still no second event for the caught-up mail.
	e.deliver("alice")
	e.rec.wait(t, 2)
	e.waitState("alice", "INBOX", store.MailboxState{UIDValidity: cur.UIDValidity, UIDNext: 4})
	wantEvents(t, e.rec.snapshot(), newEvent("alice", "INBOX"), newEvent("alice", "INBOX"))
}

// A mailbox whose UIDVALIDITY is not the stored one was rebuilt: that is
// news even though UIDNEXT did not grow.
func TestUIDValidityChangeIsNews(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	e.deliver("alice")
	cur := e.status("alice", "INBOX")
	e.setState("alice", "INBOX", store.MailboxState{UIDValidity: cur.UIDValidity + 1, UIDNext: cur.UIDNext})
	e.register("alice", 1, "INBOX")
	e.run()

	wantEvents(t, e.rec.wait(t, 1), newEvent("alice", "INBOX"))
	e.waitState("alice", "INBOX", cur)
	wantEvents(t, e.rec.snapshot(), newEvent("alice", "INBOX"))
}

// A registration for Notes alone watches Notes (in IDLE: the default poll
// interval of a minute is far longer than the wait).
func TestOnlyMailboxOtherThanInbox(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	e.createMailbox("alice", "Notes")
	e.register("alice", 1, "Notes")
	e.run()

	base := e.waitBaseline("alice", "Notes")
	e.deliver("alice") // INBOX is not registered: no event
	e.appendTo("alice", "Notes")
	wantEvents(t, e.rec.wait(t, 1), newEvent("alice", "Notes"))
	e.waitState("alice", "Notes", store.MailboxState{UIDValidity: base.UIDValidity, UIDNext: base.UIDNext + 1})
	if _, ok := e.state("alice", "INBOX"); ok {
		t.Error("INBOX has a stored state though no registration asks for it")
	}
	wantEvents(t, e.rec.snapshot(), newEvent("alice", "Notes"))
}

// With INBOX and Notes registered, INBOX is in IDLE and Notes is polled:
// mail in Notes is reported within a few poll intervals.
func TestSecondMailboxIsPolled(t *testing.T) {
	t.Parallel()
	const poll = 200 * time.Millisecond
	e := newEnv(t, func(o *watch.Options) { o.PollInterval = poll })
	e.createMailbox("alice", "Notes")
	e.register("alice", 1, "INBOX", "Notes")
	e.run()

	e.waitBaseline("alice", "INBOX")
	notes := e.waitBaseline("alice", "Notes")
	e.appendTo("alice", "Notes")
	start := time.Now()
	wantEvents(t, e.rec.wait(t, 1), newEvent("alice", "Notes"))
	if took := time.Since(start); took > 10*poll {
		t.Errorf("mail in Notes reported after %v, want within a few poll intervals (%v)", took, poll)
	}
	e.waitState("alice", "Notes", store.MailboxState{UIDValidity: notes.UIDValidity, UIDNext: notes.UIDNext + 1})

	// INBOX still works alongside.
	e.deliver("alice")
	wantEvents(t, e.rec.wait(t, 2), newEvent("alice", "Notes"), newEvent("alice", "INBOX"))
}

// A registered mailbox that does not exist is skipped; the others are still
// watched.
func TestMissingMailboxDoesNotBreakOthers(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	e.register("alice", 1, "INBOX", "DoesNotExist")
	e.run()

	base := e.waitBaseline("alice", "INBOX")
	e.deliver("alice")
	wantEvents(t, e.rec.wait(t, 1), newEvent("alice", "INBOX"))
	e.waitState("alice", "INBOX", store.MailboxState{UIDValidity: base.UIDValidity, UIDNext: base.UIDNext + 1})
	if _, ok := e.state("alice", "DoesNotExist"); ok {
		t.Error("a state was stored for a mailbox that does not exist")
	}
	wantEvents(t, e.rec.snapshot(), newEvent("alice", "INBOX"))
}

// The same when the missing mailbox is the first one (the one that would be
// selected for IDLE): the existing one is still checked every poll interval,
// and the session stays up (IDLE without a selected mailbox is fine).
func TestMissingFirstMailboxDoesNotBreakOthers(t *testing.T) {
	t.Parallel()
	var logs *lockedBuilder
	e := newEnv(t, func(o *watch.Options) {
		o.PollInterval = 200 * time.Millisecond
		o.Logger, logs = newLogCapture(o.Logger)
	})
	e.createMailbox("alice", "Notes")
	e.register("alice", 1, "DoesNotExist", "Notes")
	e.run()

	e.waitBaseline("alice", "Notes")
	e.appendTo("alice", "Notes")
	wantEvents(t, e.rec.wait(t, 1), newEvent("alice", "Notes"))
	if strings.Contains(logs.String(), "reconnecting") {
		t.Errorf("the backend session ended; log:\n%s", logs)
	}
}

// Whatever order the registration lists them in, INBOX is the mailbox in
// IDLE: with the default poll interval of a minute, its mail is still
// reported at once.
func TestInboxIsIdledFirst(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	e.createMailbox("alice", "Notes")
	e.register("alice", 1, "Notes", "INBOX")
	e.run()

	e.waitBaseline("alice", "Notes")
	e.waitBaseline("alice", "INBOX")
	e.deliver("alice")
	wantEvents(t, e.rec.wait(t, 1), newEvent("alice", "INBOX"))
}

// Mailbox names are kept as on the wire (modified UTF-7), in events and in
// the store, while the backend is asked for the right mailbox.
func TestNonASCIIMailboxName(t *testing.T) {
	t.Parallel()
	const wire, name = "Entw&APw-rfe", "Entwürfe"
	e := newEnv(t, nil)
	e.createMailbox("alice", name)
	e.register("alice", 1, wire)
	e.run()

	eventually(t, "a stored state for "+wire, func() bool { _, ok := e.state("alice", wire); return ok })
	base, _ := e.state("alice", wire)
	if want := e.status("alice", name); base != want {
		t.Fatalf("stored state %+v, Dovecot says %+v", base, want)
	}
	e.appendTo("alice", name)
	wantEvents(t, e.rec.wait(t, 1), newEvent("alice", wire))
	e.waitState("alice", wire, store.MailboxState{UIDValidity: base.UIDValidity, UIDNext: base.UIDNext + 1})
}

// With Dovecot hibernating the IDLE connection (imap_hibernate_timeout, as
// the README recommends), new mail still wakes the watcher: with the
// default poll interval of a minute, only IDLE can report it in time.
func TestNewMailWhileHibernated(t *testing.T) {
	t.Parallel()
	e := newHibernatingEnv(t, nil)
	e.register("alice", 1, "INBOX")
	e.run()
	base := e.waitBaseline("alice", "INBOX")
	e.waitHibernated("alice")

	e.deliver("alice")
	wantEvents(t, e.rec.wait(t, 1), newEvent("alice", "INBOX"))
	e.waitState("alice", "INBOX", store.MailboxState{UIDValidity: base.UIDValidity, UIDNext: base.UIDNext + 1})

	// The watcher goes back to IDLE, hibernates again, and is woken again.
	e.waitHibernated("alice")
	e.deliver("alice")
	wantEvents(t, e.rec.wait(t, 2), newEvent("alice", "INBOX"), newEvent("alice", "INBOX"))
}

// Each user has his own watcher: mail for bob is reported for bob only.
func TestUsersAreWatchedSeparately(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	e.register("alice", 1, "INBOX")
	e.register("bob", 1, "INBOX") // one phone, two accounts
	e.run()
	e.waitBaseline("alice", "INBOX")
	e.waitBaseline("bob", "INBOX")

	e.deliver("bob")
	wantEvents(t, e.rec.wait(t, 1), newEvent("bob", "INBOX"))
	e.deliver("alice")
	wantEvents(t, e.rec.wait(t, 2), newEvent("bob", "INBOX"), newEvent("alice", "INBOX"))
	e.waitSessions("alice", 1)
	e.waitSessions("bob", 1)
}

// Sync converges: deleting the last registration ends the backend session
// and nothing is reported any more; registering again starts a new one,
// which catches up with the mail that arrived in between.
func TestSyncStopsAndRestartsWatcher(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	e.register("alice", 1, "INBOX")
	e.run()
	base := e.waitBaseline("alice", "INBOX")
	e.waitSessions("alice", 1)

	if ok, err := e.st.Delete(context.Background(), "alice", token(1)); err != nil || !ok {
		t.Fatalf("Delete = %v, %v", ok, err)
	}
	e.m.Sync("alice")
	e.waitSessions("alice", 0)

	e.deliver("alice")
	e.rec.quiet(t, 0)
	if st, _ := e.state("alice", "INBOX"); st != base {
		t.Fatalf("stored state changed to %+v without a watcher (was %+v)", st, base)
	}

	e.register("alice", 1, "INBOX")
	e.m.Sync("alice")
	wantEvents(t, e.rec.wait(t, 1), newEvent("alice", "INBOX"))
	e.waitState("alice", "INBOX", store.MailboxState{UIDValidity: base.UIDValidity, UIDNext: base.UIDNext + 1})
	e.waitSessions("alice", 1)
}

// Sync with a changed mailbox set updates the running watcher: a mailbox
// added by a second device is watched, and one device's registration going
// away does not stop the watcher while another remains.
func TestSyncUpdatesMailboxes(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(o *watch.Options) { o.PollInterval = 200 * time.Millisecond })
	e.createMailbox("alice", "Notes")
	e.register("alice", 1, "INBOX")
	e.run()
	e.waitBaseline("alice", "INBOX")

	e.register("alice", 2, "INBOX", "Notes")
	e.m.Sync("alice")
	e.waitBaseline("alice", "Notes")
	e.appendTo("alice", "Notes")
	wantEvents(t, e.rec.wait(t, 1), newEvent("alice", "Notes"))

	if _, err := e.st.Delete(context.Background(), "alice", token(1)); err != nil {
		t.Fatal(err)
	}
	e.m.Sync("alice")
	e.deliver("alice")
	wantEvents(t, e.rec.wait(t, 2), newEvent("alice", "Notes"), newEvent("alice", "INBOX"))
	if n := e.sessions("alice"); n != 1 {
		t.Errorf("alice has %d backend sessions, want 1", n)
	}
}

// Probe logs in through the master user and returns the capabilities after
// login; a wrong master password is an error that names the login.
func TestProbe(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	ctx := context.Background()

	caps, err := e.m.Probe(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(caps, "IDLE") {
		t.Errorf("Probe capabilities %v lack IDLE", caps)
	}
	if !slices.IsSorted(caps) {
		t.Errorf("Probe capabilities %v are not sorted", caps)
	}
	// Dovecot offers AUTH= mechanisms only before login.
	if slices.Contains(caps, "AUTH=PLAIN") {
		t.Errorf("Probe capabilities %v are the pre-login ones", caps)
	}
	if pre, err := e.m.Probe(ctx, ""); err != nil || !slices.Contains(pre, "AUTH=PLAIN") {
		t.Errorf("Probe without a user = %v, %v; want the pre-login capabilities", pre, err)
	}

	opts := e.options()
	opts.Watch = masterLogin("master", "wrongpw")
	_, err = watch.New(opts).Probe(ctx, "alice")
	if err == nil {
		t.Fatal("Probe with a wrong master password succeeded")
	}
	if msg := err.Error(); !strings.Contains(msg, "log in as alice*master") || strings.Contains(msg, "wrongpw") {
		t.Errorf("Probe error %q: want it to name the login alice*master and not the password", msg)
	}

	opts.Backend.Address = closedAddr(t)
	if _, err := watch.New(opts).Probe(ctx, "alice"); err == nil || !strings.Contains(err.Error(), "dial backend") {
		t.Errorf("Probe of a closed port = %v, want a dial error", err)
	}
}

// closedAddr returns an address where nothing listens.
func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}
