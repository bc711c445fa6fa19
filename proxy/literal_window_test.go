package proxy

import (
	"testing"
	"time"
)

// A backend that asks for a literal and then completes the command before
// the data has come reads that data as commands of its own; the proxy must
// not send it (the two read the stream differently), whatever the timing.
func TestLiteralOfACompletedCommandIsNotSent(t *testing.T) {
	t.Parallel()
	for range 20 {
		_, client, backend := proxySession(t, nil)
		login(t, client, backend, "alice")
		client.sendRaw("x APPEND INBOX {18+}\r\nq COMPRESS DEFLATE\r\n")
		backend.expect("x APPEND INBOX {18}")
		backend.sendRaw("+ OK\r\nx NO [TRYCREATE] No such mailbox\r\n")
		backend.conn.SetReadDeadline(time.Now().Add(time.Second))
		if line, err := backend.r.ReadString('\n'); err == nil {
			t.Fatalf("after the command completed the backend received %q", line)
		}
	}
}
