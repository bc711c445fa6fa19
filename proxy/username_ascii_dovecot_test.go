package proxy

import (
	"strings"
	"testing"

	"github.com/xapsproxy/xapsproxy/internal/dovecottest"
)

// Dovecot's %L lowercases ASCII only (its C-locale tolower), so with
// auth_username_chars allowing 8-bit names "Åsa" and "åsa" are two
// accounts. The proxy must name the user as Dovecot does: lowercasing
// more than Dovecot merges distinct accounts into one key, and the watcher
// (which logs in as that key) then watches the mailbox of an account that
// is not the one whose device registered.
func TestDovecotNonASCIIUserNamedAsDovecotNamesIt(t *testing.T) {
	t.Parallel()
	d, env := dovecotProxy(t, dovecottest.Options{
		Users:       map[string]string{"Åsa": "asapw", "åsa": "otherpw"},
		ExtraConfig: "auth_username_chars =\n",
	}, func(o *Options) { o.Backend.UsernameFormat = "%Ln" })
	c := env.greeted(t)
	c.loginAs(`"ÅSA"`, "asapw")
	if got := c.register(); !strings.HasPrefix(got, "a2 OK") {
		t.Fatalf("registration: %q", got)
	}
	users := waitLogins(t, d, 1)
	regs := env.registrations()
	if len(users) != 1 || regs[0].User != users[0] {
		t.Fatalf("registered for %q; Dovecot logged in %q", regs[0].User, users)
	}
}
