package proxy

import (
	"errors"
	"strings"
	"testing"

	"github.com/xapsproxy/xapsproxy/store"
)

// Connections are counted by listener as they are accepted, those open as
// they come and go, and those refused by reason.
func TestStatsCountConnections(t *testing.T) {
	t.Parallel()
	b := startFakeBackend(t)
	env := startProxy(t, b.addr(), func(o *Options) { o.MaxConnectionsPerIP = 2 })
	waitFor(t, "both listeners", func() bool { return env.srv.Stats().Listeners == 2 })
	first, _ := env.session(t, b)
	env.session(t, b)
	third := env.dialTLS(t)
	third.expect("* BYE [UNAVAILABLE] Too many connections from your address, try again later")
	s := env.srv.Stats()
	if s.Open != 2 || s.AcceptedTLS != 3 || s.AcceptedSTARTTLS != 0 || s.RefusedPerIP != 1 || s.RefusedMax != 0 {
		t.Errorf("stats after two sessions and a refusal: %+v", s)
	}
	first.conn.Close()
	waitFor(t, "one connection open", func() bool { return env.srv.Stats().Open == 1 })
	env.dialPlain(t)
	b.accept(t, greetingCaps)
	waitFor(t, "the STARTTLS connection counted", func() bool {
		s := env.srv.Stats()
		return s.AcceptedSTARTTLS == 1 && s.Open == 2
	})

	env2 := startProxy(t, b.addr(), func(o *Options) { o.MaxConnections = 1 })
	env2.session(t, b)
	plain := env2.dialPlain(t)
	plain.expect("* BYE [UNAVAILABLE] Too many connections, try again later")
	if s := env2.srv.Stats(); s.RefusedMax != 1 || s.RefusedPerIP != 0 || s.AcceptedSTARTTLS != 1 || s.Open != 1 {
		t.Errorf("stats after a refusal over max_connections: %+v", s)
	}
}

// Logins count as ok or failed by the backend's answer, and as refused when
// the proxy answers them itself.
func TestStatsCountLogins(t *testing.T) {
	t.Parallel()
	b := startFakeBackend(t)
	env := startProxy(t, b.addr(), func(o *Options) { o.MasterSeparator = "*" })

	client, backend := env.session(t, b)
	login(t, client, backend, "alice")

	client, backend = env.session(t, b)
	client.send("l1 LOGIN bob wrong")
	backend.expect("l1 LOGIN bob wrong")
	backend.send("l1 NO [AUTHENTICATIONFAILED] Authentication failed.")
	client.expect("l1 NO [AUTHENTICATIONFAILED] Authentication failed.")
	// The proxy's own refusals: a master-user name, a mechanism it does
	// not take, a malformed LOGIN.
	client.send(`l2 LOGIN "bob*master" pw`)
	client.expect(`l2 NO [AUTHENTICATIONFAILED] User names containing "*" are not accepted here`)
	client.send("l3 AUTHENTICATE X-NONE")
	client.expect("l3 NO [CANNOT] AUTHENTICATE X-NONE is not available through this proxy")
	client.send(`l4 LOGIN "bob`)
	if l := client.readLine(); !strings.HasPrefix(l, "l4 BAD ") {
		t.Fatalf("malformed LOGIN answered %q", l)
	}
	client.send("n1 NOOP")
	backend.expect("n1 NOOP") // none of the refused reached the backend
	backend.send("n1 OK NOOP completed.")
	client.expect("n1 OK NOOP completed.")
	// And a LOGIN before STARTTLS.
	plain := env.dialPlain(t)
	b.accept(t, greetingCaps)
	plain.readLine() // the greeting
	plain.send("p1 LOGIN bob pw")
	plain.expect("p1 " + privacyRequired)
	if s := env.srv.Stats(); s.LoginsOK != 1 || s.LoginsFailed != 1 || s.LoginsRefused != 4 {
		t.Errorf("logins counted: %d ok, %d failed, %d refused; want 1, 1, 4", s.LoginsOK, s.LoginsFailed, s.LoginsRefused)
	}
}

// Registrations count by result: stored, malformed or out of place, over
// the device limit, not stored.
func TestStatsCountRegistrations(t *testing.T) {
	t.Parallel()
	b := startFakeBackend(t)
	env := startProxy(t, b.addr(), nil)
	client, backend := env.session(t, b)
	client.send(v2Line)
	client.expect("a2 BAD XAPPLEPUSHSERVICE is only valid after login")
	login(t, client, backend, "alice")
	client.send(v2Line)
	client.expect(wantXAPSReply("a2", "2", `"INBOX"`, `"Notes"`)...)
	client.send("a3 XAPPLEPUSHSERVICE aps-version 9")
	if l := client.readLine(); !strings.HasPrefix(l, "a3 BAD XAPPLEPUSHSERVICE ") {
		t.Fatalf("malformed registration answered %q", l)
	}
	env.mu.Lock()
	env.fail = store.ErrLimit
	env.mu.Unlock()
	client.send(v2Line)
	client.expect("a2 NO [LIMIT] XAPPLEPUSHSERVICE too many devices are registered for this account")
	env.mu.Lock()
	env.fail = errors.New("disk full")
	env.mu.Unlock()
	client.send(v2Line)
	client.expect("a2 NO [UNAVAILABLE] XAPPLEPUSHSERVICE registration could not be stored, try again later")
	s := env.srv.Stats()
	if s.RegistrationsOK != 1 || s.RegistrationsBad != 2 || s.RegistrationsLimit != 1 || s.RegistrationsError != 1 {
		t.Errorf("registrations counted: %d ok, %d bad, %d limit, %d error; want 1, 2, 1, 1",
			s.RegistrationsOK, s.RegistrationsBad, s.RegistrationsLimit, s.RegistrationsError)
	}
}
