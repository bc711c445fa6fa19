package imapnotify

import (
	"bufio"
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/xapsproxy/xapsproxy/internal/testlog"
)

// fake is the server end of a scripted conversation over loopback TCP.
// Its methods may be called from a goroutine other than the test's: they
// report problems with t.Errorf.
type fake struct {
	t    testing.TB
	conn net.Conn
	br   *bufio.Reader
}

// newPair connects a Client to a scripted server.
func newPair(t testing.TB, opts Options) (*Client, *fake) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	if opts.Logger == nil {
		opts.Logger = testlog.New(t)
	}
	c := New(cc, opts)
	t.Cleanup(func() { c.Close(); sc.Close() })
	return c, &fake{t: t, conn: sc, br: bufio.NewReader(sc)}
}

// send writes each line followed by CRLF (lines may hold CRLFs of their
// own, for literals).
func (f *fake) send(lines ...string) {
	var sb strings.Builder
	for _, l := range lines {
		sb.WriteString(l)
		sb.WriteString("\r\n")
	}
	f.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := f.conn.Write([]byte(sb.String())); err != nil {
		f.t.Errorf("fake server: write: %v", err)
	}
}

// line reads one line (without CRLF).
func (f *fake) line() string {
	f.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	l, err := f.br.ReadString('\n')
	if err != nil {
		f.t.Errorf("fake server: read: %v (after %q)", err, l)
		return ""
	}
	return strings.TrimSuffix(l, "\r\n")
}

// expect reads a command line, checks that what follows its tag is want,
// and returns the tag.
func (f *fake) expect(want string) string {
	l := f.line()
	tag, rest, _ := strings.Cut(l, " ")
	if rest != want {
		f.t.Errorf("fake server: got command %q, want %q", rest, want)
	}
	return tag
}

// answer reads a command (checked against want) and answers it with
// untagged lines followed by "TAG status".
func (f *fake) answer(want, status string, untagged ...string) {
	tag := f.expect(want)
	f.send(append(untagged, tag+" "+status)...)
}

// script runs the server side in a goroutine; the returned function waits
// for it to finish.
func script(t testing.TB, f func()) (wait func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	return func() {
		t.Helper()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("fake server script did not finish")
		}
	}
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

const greetingCaps = "* OK [CAPABILITY IMAP4rev1 LITERAL+ NOTIFY CONDSTORE] ready"

// watching returns a client that has greeted, logged in and set NOTIFY for
// mailboxes with the given initial STATUS lines, and its server.
func watching(t *testing.T, opts Options, mailboxes []string, wantNotify string, statuses ...string) (*Client, *fake) {
	t.Helper()
	c, f := newPair(t, opts)
	ctx := ctxT(t)
	wait := script(t, func() {
		f.send(greetingCaps)
		f.answer("LOGIN u p", "OK [CAPABILITY IMAP4rev1 LITERAL+ NOTIFY CONDSTORE] done")
		f.answer("ENABLE CONDSTORE", "OK enabled", "* ENABLED CONDSTORE")
		f.answer(wantNotify, "OK NOTIFY completed", statuses...)
	})
	if err := c.Greeting(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Login(ctx, "u", "p"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Notify(ctx, mailboxes); err != nil {
		t.Fatal(err)
	}
	wait()
	return c, f
}
