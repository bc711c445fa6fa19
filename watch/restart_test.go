package watch_test

import (
	"strings"
	"testing"

	"github.com/xapsproxy/xapsproxy/internal/dovecottest"
	"github.com/xapsproxy/xapsproxy/watch"
)

// Fifty accounts watched on a real Dovecot, through a login limit of 8;
// Dovecot is SIGKILLed with all its processes and started again. Every
// account is watched again, no greeting timed out, Dovecot has exactly one
// session per account, and new mail is reported.
func TestManyAccountsAfterDovecotKill(t *testing.T) {
	t.Parallel()
	const accounts = 50
	users := make(map[string]string, accounts)
	for i := 1; i <= accounts; i++ {
		users[fakeUser(i)] = "pw-" + fakeUser(i)
	}
	e := startEnv(t, dovecottest.Options{Users: users}, func(o *watch.Options) { o.Watch.MaxConcurrentLogins = 8 })
	for i := 1; i <= accounts; i++ {
		e.register(fakeUser(i), i, "INBOX")
	}
	e.run()
	waitStats(t, e.m, "every account watched", func(s watch.Stats) bool { return s.Watchers[watch.StateWatching] == accounts })
	if n := e.allSessions(); n != accounts {
		t.Fatalf("Dovecot has %d sessions, want %d", n, accounts)
	}

	e.d.Kill(t)
	e.d.Restart(t)
	s := waitStats(t, e.m, "every account watched again", func(s watch.Stats) bool {
		return s.Watchers[watch.StateWatching] == accounts && s.Reconnects >= accounts
	})
	if s.GreetingTimeouts != 0 {
		t.Errorf("%d greeting timeouts, want none", s.GreetingTimeouts)
	}
	eventually(t, "one Dovecot session per account", func() bool { return e.allSessions() == accounts })
	user := fakeUser(accounts / 2)
	e.deliver(user)
	wantEvents(t, e.rec.wait(t, 1), newEvent(user, "INBOX"))
}

// allSessions is the number of IMAP sessions Dovecot has, all users.
func (e *env) allSessions() int {
	e.t.Helper()
	n := 0
	for line := range strings.Lines(e.d.Doveadm(e.t, "who", "-1")) {
		if f := strings.Fields(line); len(f) >= 2 && f[1] == "imap" {
			n++
		}
	}
	return n
}
