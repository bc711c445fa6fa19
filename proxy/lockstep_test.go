package proxy

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// The proxy and the backend read the stream the same way: the proxy sends
// nothing after a possible continuation request until the backend has
// answered it (continuation.go).

// A client's non-synchronizing literal reaches the backend as a
// synchronizing one, its data only after the backend's "+", which the client
// (that did not ask for it) never sees.
func TestNonSyncLiteralSentSynchronizing(t *testing.T) {
	t.Parallel()
	_, client, backend := proxySession(t, nil)
	login(t, client, backend, "alice")
	client.sendRaw("a APPEND INBOX {5+}\r\nhello {3+}\r\nbye\r\n")
	backend.expect("a APPEND INBOX {5}")
	backend.send("+ OK")
	if got := backend.readN(5); got != "hello" {
		t.Fatalf("backend got %q", got)
	}
	backend.expect(" {3}")
	backend.send("+ OK")
	backend.expect("bye")
	backend.send("a OK Append completed.")
	client.expect("a OK Append completed.")
}

// When the backend refuses the command instead of asking for the data, the
// data the client sent unasked is dropped with the rest of the command, and
// never read as commands.
func TestNonSyncLiteralOfRefusedCommandDropped(t *testing.T) {
	t.Parallel()
	_, client, backend := proxySession(t, nil)
	login(t, client, backend, "alice")
	client.sendRaw("a APPEND Nowhere {16+}\r\nx XAPPLEPUSHSER {2+}\r\nVI\r\n")
	backend.expect("a APPEND Nowhere {16}")
	backend.send("a NO [TRYCREATE] Mailbox doesn't exist: Nowhere")
	client.expect("a NO [TRYCREATE] Mailbox doesn't exist: Nowhere")
	backend.answerSync()
	client.send("n NOOP")
	backend.expect("n NOOP")
	backend.send("n OK NOOP completed.")
	client.expect("n OK NOOP completed.")
}

// A synchronizing literal of the client's: the backend's "+" goes to the
// client; a refusal instead means the client sends no data.
func TestSyncLiteralRefused(t *testing.T) {
	t.Parallel()
	_, client, backend := proxySession(t, nil)
	login(t, client, backend, "alice")
	client.sendRaw("a APPEND Nowhere {5}\r\n")
	backend.expect("a APPEND Nowhere {5}")
	backend.send("a NO [TRYCREATE] Mailbox doesn't exist: Nowhere")
	client.expect("a NO [TRYCREATE] Mailbox doesn't exist: Nowhere")
	backend.answerSync()
	// What the client sends next is a command, whatever it looks like.
	client.send("hello NOOP")
	backend.expect("hello NOOP")
}

// Lines behind a command that may take continuation data are not read until
// the backend has answered it: behind an IDLE the backend refuses, the next
// line is a command.
func TestLinesBehindRefusedIdleAreCommands(t *testing.T) {
	t.Parallel()
	env, client, backend := proxySession(t, nil)
	login(t, client, backend, "alice")
	client.sendRaw("i IDLE\r\n" + v1Line + "\r\n")
	backend.expect("i IDLE")
	backend.send("i BAD IDLE not now")
	client.expect(append([]string{"i BAD IDLE not now"}, wantXAPSReply("tag1", "1", `"INBOX"`)...)...)
	if regs := env.registrations(); len(regs) != 1 || regs[0].User != "alice" {
		t.Fatalf("stored %+v", regs)
	}
}

// In IDLE, the client's line after the "+" ends it: DONE goes on; anything
// else is answered BAD, as Dovecot does, and the backend still gets DONE.
func TestIdleEndsWithDoneOnly(t *testing.T) {
	t.Parallel()
	_, client, backend := proxySession(t, nil)
	login(t, client, backend, "alice")
	client.send("i1 IDLE")
	backend.expect("i1 IDLE")
	backend.send("+ idling")
	client.expect("+ idling")
	client.send("done")
	backend.expect("DONE")
	backend.send("i1 OK Idle completed.")
	client.expect("i1 OK Idle completed.")

	client.send("i2 IDLE")
	backend.expect("i2 IDLE")
	backend.send("+ idling")
	client.expect("+ idling")
	client.send("x LOGIN bob bobpw")
	backend.expect("DONE")
	backend.send("i2 OK Idle completed.")
	client.expect("i2 BAD Expected DONE to end IDLE")
	client.send("n NOOP")
	backend.expect("n NOOP")
}

// A response that answers no command in flight means the backend reads the
// stream differently from the proxy: the session ends.
func TestBackendResponseToNothingEndsSession(t *testing.T) {
	t.Parallel()
	for name, resp := range map[string]string{
		"unknown tag":             "x OK LOGIN completed.",
		"continuation unasked":    "+ OK",
		"tag of answered command": "n OK again",
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			_, client, backend := proxySession(t, nil)
			client.send("n NOOP")
			backend.expect("n NOOP")
			backend.send("n OK NOOP completed.", resp)
			client.expect("n OK NOOP completed.", "* BYE [SERVERBUG] Unexpected response from the mail server")
			client.expectClosed()
		})
	}
}

// A tagged response to a command whose literal data is still being sent is
// the same kind of disagreement.
func TestResponseDuringLiteralDataEndsSession(t *testing.T) {
	t.Parallel()
	_, client, backend := proxySession(t, nil)
	login(t, client, backend, "alice")
	client.sendRaw("a APPEND INBOX {100000}\r\n")
	backend.expect("a APPEND INBOX {100000}")
	backend.send("+ OK")
	client.expect("+ OK")
	client.sendRaw(strings.Repeat("x", 50000))
	backend.readN(writeBufferSize) // the proxy's first buffer of it
	backend.send("a OK Append completed.")
	client.expect("* BYE [SERVERBUG] Unexpected response from the mail server")
	client.expectClosed()
}

// readN reads exactly n bytes.
func (c *lineConn) readN(n int) string {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(readTimeout))
	var sb strings.Builder
	for sb.Len() < n {
		b, err := c.r.ReadByte()
		if err != nil {
			c.t.Fatalf("read: %v (got %q)", err, sb.String())
		}
		sb.WriteByte(b)
	}
	return sb.String()
}

// Commands pipelined behind a LOGIN are judged once the backend has
// answered it: forwarded after a successful login, refused after a failed
// one, and a second LOGIN is never forwarded.
func TestPipelinedBehindLogin(t *testing.T) {
	t.Parallel()
	env, client, backend := proxySession(t, nil)
	client.sendRaw("l1 LOGIN alice wrong\r\ns1 SELECT INBOX\r\nl2 LOGIN alice secret\r\ns2 SELECT INBOX\r\nl3 LOGIN bob secret\r\n")
	backend.expect("l1 LOGIN alice wrong")
	backend.send("l1 NO [AUTHENTICATIONFAILED] Authentication failed.")
	client.expect("l1 NO [AUTHENTICATIONFAILED] Authentication failed.", "s1 BAD SELECT is not valid before login")
	backend.expect("l2 LOGIN alice secret")
	backend.send("l2 OK Logged in")
	backend.expect("s2 SELECT INBOX")
	backend.send("s2 OK [READ-WRITE] Select completed.")
	client.expect("l2 OK Logged in", "s2 OK [READ-WRITE] Select completed.", "l3 BAD Already logged in")
	client.send(v1Line)
	client.expect(wantXAPSReply("tag1", "1", `"INBOX"`)...)
	if regs := env.registrations(); len(regs) != 1 || regs[0].User != "alice" {
		t.Fatalf("stored %+v", regs)
	}
}

// A backend may answer a command and still go on reading it, asking for a
// literal after its tagged response (Dovecot's SETMETADATA does): before
// anything else goes to the backend, the proxy makes sure it is done with
// the command, and a late "+" ends the session.
func TestLateContinuationEndsSession(t *testing.T) {
	t.Parallel()
	_, client, backend := proxySession(t, nil)
	login(t, client, backend, "alice")
	client.sendRaw("x NOOP {3}\r\ny APPEND INBOX {5+}\r\nhello\r\n")
	backend.expect("x NOOP {3}")
	backend.send("x BAD Error in IMAP command NOOP: early")
	client.expect("x BAD Error in IMAP command NOOP: early")
	backend.expect(syncTag + " NOOP")
	backend.send("+ OK")
	client.expect("* BYE [SERVERBUG] Unexpected response from the mail server")
	client.expectClosed()
	backend.conn.SetReadDeadline(time.Now().Add(time.Second))
	if line, err := backend.r.ReadString('\n'); err == nil {
		t.Fatalf("the backend received %q after its late continuation request", line)
	}
}

// A line longer than the proxy's write buffer that ends in a literal goes out
// while it is written; the backend's "+" for it is expected all the same.
func TestLongLineWithLiteral(t *testing.T) {
	t.Parallel()
	_, client, backend := proxySession(t, nil)
	login(t, client, backend, "alice")
	line := "s SEARCH " + strings.Repeat("OR SEEN SEEN ", 3000) + "TEXT {5}"
	client.sendRaw(line + "\r\n")
	backend.expect(line)
	backend.send("+ OK")
	client.expect("+ OK")
	client.sendRaw("hello\r\n")
	if got := backend.readN(7); got != "hello\r\n" {
		t.Fatalf("backend got %q", got)
	}
	backend.send("s OK Search completed.")
	client.expect("s OK Search completed.")
}

// A backend may answer a command as soon as it has the last byte of its
// literal (before the line's end): that is no disagreement, even when the
// data fills the proxy's buffer exactly and goes out while it is copied.
func TestAnswerRightAfterLiteralData(t *testing.T) {
	t.Parallel()
	_, client, backend := proxySession(t, nil)
	login(t, client, backend, "alice")
	data := strings.Repeat("x", writeBufferSize)
	client.sendRaw(fmt.Sprintf("c CREATE {%d}\r\n", len(data)))
	backend.expect(fmt.Sprintf("c CREATE {%d}", len(data)))
	backend.send("+ OK")
	client.expect("+ OK")
	client.sendRaw(data)
	if got := backend.readN(len(data)); got != data {
		t.Fatal("backend got other data")
	}
	backend.send("c OK Create completed.")
	client.expect("c OK Create completed.")
	client.sendRaw("\r\n")
	backend.expect("")
	client.send("n NOOP")
	backend.expect("n NOOP")
}
