package proxy

import (
	"fmt"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Hostile or odd input: each case gets a clear reply or a closed
// connection, never a crash, and the proxy keeps serving others.

func TestXAPPLEPUSHSERVICEHostileValues(t *testing.T) {
	t.Parallel()
	const token = "2918390218931890821908309283098109381029309829018310983092892829"
	tests := []struct {
		name, send, want string
	}{
		{"deep nesting", "x XAPPLEPUSHSERVICE foo " + strings.Repeat("(", 20) + "\r\n", "x BAD XAPPLEPUSHSERVICE expected lists nested at most 8 deep"},
		{"too many mailboxes", "x XAPPLEPUSHSERVICE aps-version 2 mailboxes (" + strings.Repeat("m ", 1000) + "m)\r\n", "x BAD XAPPLEPUSHSERVICE expected at most 1000 mailboxes"},
		{"endless atom after a literal", "x XAPPLEPUSHSERVICE aps-foo {0+}\r\n bar" + strings.Repeat("a", 70<<10) + "\r\n", "x BAD XAPPLEPUSHSERVICE command too long"},
		{"backslash before a bare LF", "x XAPPLEPUSHSERVICE aps-version \"2\\\n", "x BAD XAPPLEPUSHSERVICE bad escape in quoted string"},
		{"literal8 is not a string", "x XAPPLEPUSHSERVICE aps-version ~{1+}\r\n2\r\n", "x BAD XAPPLEPUSHSERVICE expected space"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, client, backend := proxySession(t, nil)
			login(t, client, backend, "alice")
			client.sendRaw(tt.send)
			client.expect(tt.want)
			client.send("n1 NOOP")
			backend.expect("n1 NOOP")
		})
	}
	t.Run("flood of parentheses", func(t *testing.T) {
		t.Parallel()
		b := startFakeBackend(t)
		env := startProxy(t, b.addr(), nil)
		client, backend := env.session(t, b)
		login(t, client, backend, "alice")
		client.sendRaw("x XAPPLEPUSHSERVICE aps-foo {0+}\r\n bar ")
		go client.conn.Write([]byte(strings.Repeat("(", 1<<20))) // the proxy hangs up long before the end
		client.expect("* BYE Command line too long")
		client.expectClosed()
		// Still serving.
		other, _ := env.session(t, b)
		other.send("n1 NOOP")
	})
	t.Run("tilde starts an atom", func(t *testing.T) {
		t.Parallel()
		env, client, backend := proxySession(t, nil)
		login(t, client, backend, "alice")
		client.send("x XAPPLEPUSHSERVICE aps-version 2 aps-account-id A aps-device-token " + token + " mailboxes (INBOX ~Archive)")
		client.expect(wantXAPSReply("x", "2", `"INBOX"`, `"~Archive"`)...)
		if regs := env.registrations(); len(regs) != 1 || strings.Join(regs[0].Mailboxes, ",") != "INBOX,~Archive" {
			t.Fatalf("stored %+v", regs)
		}
	})
}

// The proxy's own reply never overtakes the response to a command pipelined
// before it (the backend's response is written before the reply may go).
func TestOwnReplyNeverOvertakes(t *testing.T) {
	t.Parallel()
	_, client, backend := proxySession(t, nil)
	for i := range 300 {
		client.send(fmt.Sprintf("p%d NOOP", i), fmt.Sprintf("z%d COMPRESS DEFLATE", i))
		backend.expect(fmt.Sprintf("p%d NOOP", i))
		backend.send(fmt.Sprintf("p%d OK NOOP completed.", i))
		client.expect(fmt.Sprintf("p%d OK NOOP completed.", i), fmt.Sprintf("z%d NO COMPRESS is not available through this proxy", i))
	}
}

func TestCommandsTheProxyCannotRead(t *testing.T) {
	t.Parallel()
	_, client, backend := proxySession(t, nil)

	// A tag but a command name that is not an atom: refused, as the
	// backend might read a name there; its literal is never sent.
	client.sendRaw("a1 \"LOGIN\" {5}\r\n")
	client.expect("a1 BAD Invalid command name")
	client.sendRaw("a2 NOOP(x\r\n")
	client.expect("a2 BAD Invalid command name")
	client.send("n1 NOOP")
	backend.expect("n1 NOOP")

	// No tag at all: answered by the proxy.
	client.send(`"x" NOOP`)
	client.expect("* BAD Invalid command: no tag")
	client.send("n2 NOOP")
	backend.expect("n2 NOOP")
	client.sendRaw("(x {5}\r\n")
	client.expect("* BYE Invalid command: no tag")
	client.expectClosed()
}

// Status lines end in free text, which may look like a literal.
func TestStatusTextEndingLikeALiteral(t *testing.T) {
	t.Parallel()
	_, client, backend := proxySession(t, nil)
	login(t, client, backend, "alice")
	client.send("s1 SELECT x{22}")
	backend.expect("s1 SELECT x{22}")
	backend.send("* OK [ALERT] look: {3}", "s1 NO Mailbox doesn't exist: x{22}")
	client.expect("* OK [ALERT] look: {3}", "s1 NO Mailbox doesn't exist: x{22}")
	backend.answerSync()
	client.send(v1Line)
	client.expect(wantXAPSReply("tag1", "1", `"INBOX"`)...)
}

// A tag in flight is not reused: the second command is refused before it is
// forwarded, so a tagged response always answers exactly one command.
func TestReusedTag(t *testing.T) {
	t.Parallel()
	_, client, backend := proxySession(t, nil)
	login(t, client, backend, "alice")
	client.sendRaw("a NOOP\r\na APPEND INBOX {5}\r\n")
	backend.expect("a NOOP")
	backend.send("a OK NOOP completed.")
	client.expect("a OK NOOP completed.", "a BAD Tag a is already in use by a command in progress")
	// Once answered, the tag is free again.
	client.sendRaw("a APPEND INBOX {5}\r\n")
	backend.expect("a APPEND INBOX {5}")
	backend.send("+ OK")
	client.expect("+ OK")
	client.sendRaw("hello\r\n")
	backend.expect("hello")
	backend.send("a OK Append completed.")
	client.expect("a OK Append completed.")
	client.send(v1Line)
	client.expect(wantXAPSReply("tag1", "1", `"INBOX"`)...)
}

// A command goes to the backend even when the next one is still arriving.
func TestForwardsWithoutWaitingForTheNextLine(t *testing.T) {
	t.Parallel()
	_, client, backend := proxySession(t, nil)
	client.sendRaw("a1 NOOP\r\na2 NO")
	backend.expect("a1 NOOP")
	backend.sendRaw("a1 OK NOOP completed.\r\n* 3 EXI")
	client.expect("a1 OK NOOP completed.")
}

// Pipelined commands are bounded: the proxy stops reading the client when
// maxPipeline commands wait for their responses.
func TestPipelineDepthIsBounded(t *testing.T) {
	t.Parallel()
	_, client, backend := proxySession(t, nil)
	var cmds []string
	for i := range maxPipeline + 5 {
		cmds = append(cmds, fmt.Sprintf("n%d NOOP", i))
	}
	go client.send(cmds...)
	for i := range maxPipeline {
		backend.expect(fmt.Sprintf("n%d NOOP", i))
	}
	backend.conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if line, err := backend.r.ReadString('\n'); err == nil {
		t.Fatalf("command %q forwarded beyond the pipeline bound", line)
	}
	backend.send("n0 OK NOOP completed.")
	backend.expect(fmt.Sprintf("n%d NOOP", maxPipeline))
}

// Running out of file descriptors does not stop the listener.
func TestAcceptErrorsAreRetried(t *testing.T) {
	t.Parallel()
	b := startFakeBackend(t)
	env := startProxy(t, b.addr(), nil)
	ln := &failingListener{Listener: listen(t)}
	ln.failures.Store(3)
	go env.srv.ServeTLS(ln)
	c := env.dialTLSAt(t, ln.Addr().String())
	b.accept(t, greetingCaps)
	c.expect(greetingCaps)
}

type failingListener struct {
	net.Listener
	failures atomic.Int32
}

func (l *failingListener) Accept() (net.Conn, error) {
	if l.failures.Add(-1) >= 0 {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	return l.Listener.Accept()
}

// After a refused pre-auth literal on AUTHENTICATE, contCmd stays set and
// every later client line is forwarded raw (here COMPRESS).
func TestRefusedLiteralEndsContinuation(t *testing.T) {
	t.Parallel()
	_, client, backend := proxySession(t, nil)
	client.send("a1 AUTHENTICATE PLAIN {100000}")
	client.expect("a1 BAD AUTHENTICATE expects a mechanism and an optional initial response")
	client.send("c1 COMPRESS DEFLATE")
	backend.conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	if line, err := backend.r.ReadString('\n'); err == nil {
		t.Fatalf("backend received %q: the proxy forwarded a command it must intercept", line)
	}
}

// A command followed in the same packet by a line without a tag is never
// flushed to the backend.
func TestNoTagLineAfterPipelinedCommand(t *testing.T) {
	t.Parallel()
	_, client, backend := proxySession(t, nil)
	client.sendRaw("a1 NOOP\r\nxyz\r\n")
	client.expect("* BAD Invalid command: no tag")
	backend.conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := backend.r.ReadString('\n'); err != nil {
		t.Fatalf("backend never got a1 NOOP: %v", err)
	}
}

// A logged-in client that stops in the middle of a literal is never timed out.
func TestStalledLiteralTimesOut(t *testing.T) {
	t.Parallel()
	_, client, backend := proxySession(t, func(o *Options) { o.IdleTimeout = 300 * time.Millisecond })
	login(t, client, backend, "alice")
	client.send("a1 APPEND INBOX {100}")
	backend.expect("a1 APPEND INBOX {100}")
	backend.send("+ OK")
	client.expect("+ OK")
	client.sendRaw("abc")
	client.conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := client.r.ReadString('\n'); err != nil {
		t.Errorf("after 2s (idle timeout 300ms) the session is still open: %v", err)
	}
}
