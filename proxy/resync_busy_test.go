package proxy

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// The proxy's NOOP after a command answered early is bounded so that a
// backend that neither answers nor asks does not keep the session. A
// backend that is answering it (a NOOP on a large selected mailbox reports
// every pending change first, and a slow client reads them slowly) is not
// such a backend: while its responses keep coming, the session stays.
func TestResyncAnsweredSlowlyKeepsSession(t *testing.T) {
	t.Parallel()
	_, client, backend := proxySession(t, func(o *Options) { o.ContinuationTimeout = 300 * time.Millisecond })
	login(t, client, backend, "alice")
	client.sendRaw("x APPEND Sent {3}\r\n")
	backend.expect("x APPEND Sent {3}")
	backend.send("x NO [TRYCREATE] Mailbox doesn't exist: Sent")
	client.expect("x NO [TRYCREATE] Mailbox doesn't exist: Sent")
	backend.expect(syncTag + " NOOP")
	for i := 1; i <= 12; i++ {
		backend.send(fmt.Sprintf("* %d FETCH (FLAGS (\\Seen))", i))
		if got := client.readLine(); strings.HasPrefix(got, "* BYE") {
			t.Fatalf("after %d of the NOOP's responses: %q", i, got)
		}
		time.Sleep(50 * time.Millisecond)
	}
	backend.send(syncTag + " OK NOOP completed.")
	client.send("n NOOP")
	backend.expect("n NOOP")
	backend.send("n OK NOOP completed.")
	client.expect("n OK NOOP completed.")
}
