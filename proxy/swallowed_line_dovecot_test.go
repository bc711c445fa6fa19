package proxy

import (
	"strings"
	"testing"
	"time"

	"github.com/xapsproxy/xapsproxy/internal/dovecottest"
)

// Some refusals leave Dovecot skipping input: SETMETADATA with a list for a
// value answers "Entry value can't be a list" after it has read the literal
// header inside the list, and then drops the next line as the rest of the
// command's. Forwarded, the client's next command would never be answered,
// and every command that waits for the pipeline to drain (IDLE, an APPEND,
// XAPPLEPUSHSERVICE) would hang. The proxy refuses the SETMETADATA itself;
// and when the backend answers a command before asking for its literal, the
// proxy's own NOOP that follows must be answered in time, or the session
// ends.
func TestDovecotCommandAfterRefusalAnswered(t *testing.T) {
	t.Parallel()
	_, env := dovecotProxy(t, dovecottest.Options{ExtraConfig: metadataConfig}, nil)
	c := env.greeted(t)
	c.loginAs("alice", "alicepw")
	c.sendRaw(`x SETMETADATA "" (/private/a ({5}` + "\r\n")
	c.expect("x BAD SETMETADATA values must be quoted strings or NIL through this proxy")
	c.send("n NOOP")
	if got := c.readUntilTagged("n"); !strings.HasPrefix(got, "n OK ") {
		t.Fatalf("NOOP: %q", got)
	}
}

// The backend answers a command before asking for its literal, and then
// leaves the proxy's NOOP unanswered: the session ends.
func TestResyncUnansweredEndsSession(t *testing.T) {
	t.Parallel()
	_, client, backend := proxySession(t, func(o *Options) { o.ContinuationTimeout = 200 * time.Millisecond })
	login(t, client, backend, "alice")
	client.sendRaw("x NOOP {3}\r\n")
	backend.expect("x NOOP {3}")
	backend.send("x BAD early")
	client.expect("x BAD early")
	backend.expect(syncTag + " NOOP")
	client.expect("* BYE [UNAVAILABLE] The mail server did not answer")
	client.expectClosed()
}
