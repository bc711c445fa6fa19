package proxy

import (
	"strings"
	"testing"
	"time"

	"github.com/xapsproxy/xapsproxy/internal/dovecottest"
)

// Dovecot does not ask for every literal: inside APPEND's flag list it
// reads "{5}" as a size only, sends nothing, and goes on reading what
// follows. The proxy waits for a "+" that never comes and meanwhile reads
// nothing from the client, so a client that hangs up would go unnoticed,
// its session and Dovecot process kept until the idle timeout. A backend
// that neither asks nor answers within the continuation timeout ends the
// session.
func TestDovecotSilentLiteralEndsSession(t *testing.T) {
	t.Parallel()
	d, env := dovecotProxy(t, dovecottest.Options{}, func(o *Options) { o.ContinuationTimeout = 300 * time.Millisecond })
	c := env.greeted(t)
	c.loginAs("alice", "alicepw")
	c.sendRaw("x APPEND INBOX ({5}\r\n")
	c.expect("* BYE [UNAVAILABLE] The mail server did not answer")
	c.expectClosed()
	waitFor(t, "Dovecot's session to end", func() bool {
		return strings.Contains(d.Log(), "imap(alice)") && strings.Contains(d.Log(), "Disconnected")
	})
}
