package proxy

import (
	"strings"
	"testing"

	"github.com/xapsproxy/xapsproxy/config"
	"github.com/xapsproxy/xapsproxy/internal/dovecottest"
)

// Dovecot logs in the user its auth_username_format makes of the name a
// client gives (its default %Lu lowercases it; the test instance's %Ln also
// drops a domain). Devices are registered for that user, not for the name
// as spelled: otherwise one account would become as many users as it has
// spellings, each with its own device limit and its own watcher (a
// connection to Dovecot each).
func TestDovecotRegisteredForTheUserDovecotLoggedIn(t *testing.T) {
	t.Parallel()
	d, env := dovecotProxy(t, dovecottest.Options{}, func(o *Options) {
		o.Backend.UsernameFormat = "%Ln" // as in testdata/dovecot's auth_username_format
	})
	for i, name := range []string{"ALICE", "Alice", "alice@spelling.example"} {
		c := env.greeted(t)
		c.loginAs(name, "alicepw")
		if got := c.register(); !strings.HasPrefix(got, "a2 OK") {
			t.Fatalf("registration: %q", got)
		}
		users := waitLogins(t, d, i+1)
		regs := env.registrations()
		if got, want := regs[len(regs)-1].User, users[len(users)-1]; got != want {
			t.Errorf("LOGIN %s: registered for %q; Dovecot logged in %q", name, got, want)
		}
	}
	if got := (config.Backend{}).CanonicalUser("Alice"); got != "alice" {
		t.Errorf("by default (Dovecot's %%Lu), Alice is %q", got)
	}
}
