package proxy

import (
	"strings"
	"testing"

	"github.com/xapsproxy/xapsproxy/internal/dovecottest"
)

// Dovecot's X-CANCEL <tag> cancels a command still in its queue. A command
// that has done its work and waits to sync the mailbox before its tagged
// reply (NOOP, CHECK, STORE... with a mailbox selected) is freed without
// any reply at all:
//
//	a NOOP
//	b X-CANCEL a    ->  b OK Command cancelled.   (and never an "a ..." line)
//
// The proxy then waits for a's response forever: everything that waits for
// the commands in flight to be answered (a refusal, XAPPLEPUSHSERVICE, IDLE,
// any literal) blocks the session until the idle timeout, and a's tag stays
// in use. Every forwarded command must get its tagged response.
func TestDovecotXCancelLeavesNoCommandUnanswered(t *testing.T) {
	t.Parallel()
	_, env := dovecotProxy(t, dovecottest.Options{}, nil)
	c := env.greeted(t)
	c.loginAs("alice", "alicepw")
	c.send("s SELECT INBOX")
	if got := c.readUntilTagged("s"); !strings.HasPrefix(got, "s OK ") {
		t.Fatalf("SELECT: %q", got)
	}
	c.sendRaw("a NOOP\r\nb X-CANCEL a\r\n")
	c.readUntilTagged("b")
	c.send("z COMPRESS DEFLATE")
	for {
		l := c.readLine() // fails after readTimeout if nothing comes
		if strings.HasPrefix(l, "z ") {
			break
		}
	}
	if got := c.register(); !strings.HasPrefix(got, "a2 OK") {
		t.Fatalf("registration: %q", got)
	}
}
