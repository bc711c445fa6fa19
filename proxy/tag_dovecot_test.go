package proxy

import (
	"fmt"
	"strings"
	"testing"

	"github.com/xapsproxy/xapsproxy/internal/dovecottest"
)

// Dovecot reads a tag as RFC 9051 says except that it refuses "]" in it
// (and, before login, a tag over 126 bytes), and answers such a command with
// an untagged BAD only: forwarded, it would wait for its tagged response
// forever, and a session with a command running is never timed out. The
// proxy refuses such tags itself.
func TestDovecotTagsDovecotRefuses(t *testing.T) {
	t.Parallel()
	_, env := dovecotProxy(t, dovecottest.Options{}, nil)
	c := env.greeted(t)
	c.loginAs("alice", "alicepw")
	long := strings.Repeat("t", maxTagLength+1)
	var b strings.Builder
	for i := range maxPipeline + 10 {
		fmt.Fprintf(&b, "a%d] NOOP\r\n%s NOOP\r\n", i, long)
	}
	go c.conn.Write([]byte(b.String()))
	for range maxPipeline + 10 {
		c.expect("* BAD Invalid tag", "* BAD Invalid tag")
	}
	c.send("n NOOP")
	if got := c.readUntilTagged("n"); !strings.HasPrefix(got, "n OK ") {
		t.Fatalf("NOOP: %q", got)
	}
}
