package watch_test

import (
	"strings"
	"testing"
	"time"

	"github.com/xapsproxy/xapsproxy/event"
	"github.com/xapsproxy/xapsproxy/watch"
)

// Account shows the watcher's state and since when, the last event the
// owner reported, and the last failure: a lost backend, then a refused
// login, whose text carries no password.
func TestAccountStatus(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	if _, ok := e.m.Account("alice"); ok {
		t.Fatal("Account before any registration reports an owner")
	}
	e.register("alice", 1, "INBOX", "Notes")
	start := time.Now()
	e.run()
	e.waitBaseline("alice", "INBOX")
	a := waitAccount(t, e.m, "alice", "watching", func(a watch.AccountStatus) bool { return a.State == watch.StateWatching })
	if !a.Connection || a.Source != watch.SourceIdle || a.Since.Before(start) || a.LastError != "" || !a.LastEvent.At.IsZero() {
		t.Errorf("watching account = %+v, want a connection since the start, no error, no event", a)
	}
	if len(a.Mailboxes) != 2 || a.Mailboxes[0] != "INBOX" || a.Mailboxes[1] != "Notes" {
		t.Errorf("Mailboxes = %q, want INBOX, Notes", a.Mailboxes)
	}

	e.deliver("alice")
	e.rec.wait(t, 1)
	a = waitAccount(t, e.m, "ALICE", "the event", func(a watch.AccountStatus) bool { return !a.LastEvent.At.IsZero() })
	if a.User != "alice" || a.LastEvent.Mailbox != "INBOX" || a.LastEvent.Kind != event.KindNew || a.LastEvent.At.Before(start) {
		t.Errorf("after a delivery, Account(ALICE) = %+v, want alice's new mail in INBOX", a)
	}

	// The backend goes away: the watcher's error is its session's end.
	e.d.Stop(t)
	a = waitAccount(t, e.m, "alice", "an error", func(a watch.AccountStatus) bool { return a.LastError != "" })
	if a.LastErrorAt.Before(start) || a.State == watch.StateWatching {
		t.Errorf("after the backend stopped, Account = %+v, want a recent error and not watching", a)
	}
	waitAccount(t, e.m, "alice", "unreachable", func(a watch.AccountStatus) bool {
		return a.State == watch.StateUnreachable && a.BackendUnreachable
	})
	e.d.Restart(t)
	waitAccount(t, e.m, "alice", "watching again", func(a watch.AccountStatus) bool { return a.State == watch.StateWatching })
}

// A refused login is the account's last error, and the master password is
// not in it even when the server echoes it.
func TestAccountStatusRefusedLogin(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(o *watch.Options) { o.Watch.MasterPassword = "wrong-password" })
	e.register("alice", 1, "INBOX")
	e.run()
	a := waitAccount(t, e.m, "alice", "a refused login", func(a watch.AccountStatus) bool {
		return a.LastError != "" && a.State == watch.StateBackoff
	})
	if strings.Contains(a.LastError, "wrong-password") || strings.Contains(a.LastError, "masterpw") {
		t.Errorf("LastError shows a password: %q", a.LastError)
	}
	if !strings.Contains(strings.ToLower(a.LastError), "login") {
		t.Errorf("LastError = %q, want it to say the login failed", a.LastError)
	}
}

// With Dovecot's own events there is no connection per account: Account
// says so, and still shows the last event.
func TestAccountStatusEvents(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(o *watch.Options) { o.Source = watch.SourceEvents })
	e.register("alice", 1, "INBOX")
	e.run()
	waitAccount(t, e.m, "alice", "an owner", func(watch.AccountStatus) bool { return true })
	e.m.Hint(event.Hint{User: "alice", Mailbox: "INBOX", What: event.Arrived})
	a := waitAccount(t, e.m, "alice", "the event", func(a watch.AccountStatus) bool { return !a.LastEvent.At.IsZero() })
	if a.Connection || a.Source != watch.SourceEvents || a.LastEvent.Mailbox != "INBOX" {
		t.Errorf("Account = %+v, want no connection, source dovecot, the INBOX event", a)
	}
}

// waitAccount polls m.Account(user) until cond holds.
func waitAccount(t *testing.T, m *watch.Manager, user, what string, cond func(watch.AccountStatus) bool) watch.AccountStatus {
	t.Helper()
	var a watch.AccountStatus
	eventually(t, "Account("+user+") to show "+what, func() bool {
		var ok bool
		a, ok = m.Account(user)
		return ok && cond(a)
	})
	return a
}
