package imapnotify

import (
	"context"
	"crypto/tls"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/xapsproxy/xapsproxy/event"
	"github.com/xapsproxy/xapsproxy/internal/testlog"
	"github.com/xapsproxy/xapsproxy/internal/testpki"
)

func TestGreetingCapabilities(t *testing.T) {
	c, f := newPair(t, Options{})
	ctx := ctxT(t)
	f.send("* OK [CAPABILITY IMAP4rev1 literal+ IDLE] Dovecot ready.")
	if err := c.Greeting(ctx); err != nil {
		t.Fatal(err)
	}
	caps, err := c.Capabilities(ctx) // from the greeting: no command
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"IMAP4REV1", "LITERAL+", "IDLE"}; !slices.Equal(caps, want) {
		t.Errorf("capabilities = %q, want %q", caps, want)
	}
	// LOGIN's answer without a code: asked for, after the login.
	wait := script(t, func() {
		f.answer("LOGIN alice pw", "OK Logged in")
		f.answer("CAPABILITY", "OK done", "* CAPABILITY IMAP4rev1 NOTIFY")
	})
	if err := c.Login(ctx, "alice", "pw"); err != nil {
		t.Fatal(err)
	}
	if caps, err = c.Capabilities(ctx); err != nil || !slices.Equal(caps, []string{"IMAP4REV1", "NOTIFY"}) {
		t.Errorf("capabilities after login = %q, %v", caps, err)
	}
	wait()
}

func TestGreetingBye(t *testing.T) {
	c, f := newPair(t, Options{})
	f.send("* BYE Too many connections")
	err := c.Greeting(ctxT(t))
	if !errors.Is(err, ErrBye) || !strings.Contains(err.Error(), "Too many connections") {
		t.Fatalf("Greeting = %v, want ErrBye with the text", err)
	}
	if _, err2 := c.Capabilities(ctxT(t)); err2 != err {
		t.Errorf("after a BYE greeting, Capabilities = %v, want the same error", err2)
	}
}

// Each string goes in the form that reaches the server intact.
func TestLoginForms(t *testing.T) {
	for _, tc := range []struct {
		name, caps, user, pass string
		wire                   []string // lines the server reads
		sync                   bool     // the server must send "+" after the first line
	}{
		{"atoms", "LITERAL+", "alice", "s3cret", []string{"LOGIN alice s3cret"}, false},
		{"wildcard quoted", "LITERAL+", "alice*master", "s3cret", []string{`LOGIN "alice*master" s3cret`}, false},
		{"quoted", "LITERAL+", "alice", `p w"\`, []string{`LOGIN alice "p w\"\\"`}, false},
		{"nil quoted", "LITERAL+", "nil", "NIL", []string{`LOGIN "nil" "NIL"`}, false},
		{"literal+", "LITERAL+", "alice", "pässwörd", []string{"LOGIN alice {10+}", "pässwörd"}, false},
		{"literal-", "LITERAL-", "alice", "pässwörd", []string{"LOGIN alice {10+}", "pässwörd"}, false},
		{"sync literal", "IMAP4rev1", "alice", "pässwörd", []string{"LOGIN alice {10}", "pässwörd"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, f := newPair(t, Options{Logger: testlog.New(t, tc.pass)})
			ctx := ctxT(t)
			wait := script(t, func() {
				f.send("* OK [CAPABILITY " + tc.caps + "] hi")
				l := f.line()
				tag, first, _ := strings.Cut(l, " ")
				got := []string{first}
				if len(tc.wire) > 1 {
					if tc.sync {
						f.send("+ go ahead")
					}
					got = append(got, f.line())
				}
				if !slices.Equal(got, tc.wire) {
					f.t.Errorf("server read %q, want %q", got, tc.wire)
				}
				f.send(tag + " NO [AUTHENTICATIONFAILED] Authentication failed.")
			})
			if err := c.Greeting(ctx); err != nil {
				t.Fatal(err)
			}
			err := c.Login(ctx, tc.user, tc.pass)
			var re *ResponseError
			if !errors.As(err, &re) || re.Status != "NO" || re.Code != "AUTHENTICATIONFAILED" || re.Temporary() {
				t.Fatalf("Login = %#v, want a permanent NO [AUTHENTICATIONFAILED]", err)
			}
			if strings.Contains(err.Error(), tc.pass) {
				t.Errorf("the error %q holds the password", err)
			}
			wait()
		})
	}
}

func TestLoginTemporaryAndRefusedLiteral(t *testing.T) {
	c, f := newPair(t, Options{})
	ctx := ctxT(t)
	wait := script(t, func() {
		f.send("* OK hi") // no capabilities known: synchronizing literal
		tag := f.expect("LOGIN alice {3}")
		f.send(tag + " NO [UNAVAILABLE] Temporary authentication failure.") // no "+": no data
		f.answer("LOGIN alice pw", "NO [UNAVAILABLE] Try later")
	})
	if err := c.Greeting(ctx); err != nil {
		t.Fatal(err)
	}
	var re *ResponseError
	if err := c.Login(ctx, "alice", "pé"); !errors.As(err, &re) || !re.Temporary() {
		t.Fatalf("Login = %v, want a temporary NO", err)
	}
	// The stream is still in step: the next command works.
	if err := c.Login(ctx, "alice", "pw"); !errors.As(err, &re) || !re.Temporary() || re.Text != "Try later" {
		t.Fatalf("second Login = %v", err)
	}
	wait()
}

func TestStatusCommand(t *testing.T) {
	c, f := newPair(t, Options{})
	ctx := ctxT(t)
	wait := script(t, func() {
		f.send(greetingCaps)
		f.answer(`STATUS F&AOk-t (UIDVALIDITY UIDNEXT)`, "OK done",
			"* STATUS Other (UIDNEXT 9 UIDVALIDITY 1)", // not the one asked for
			"* STATUS {4}\r\nFét (UIDNEXT 7 UIDVALIDITY 42 APPENDLIMIT NIL)")
		f.answer("STATUS Missing (UIDVALIDITY UIDNEXT)", "NO [NONEXISTENT] Mailbox doesn't exist: Missing")
	})
	if err := c.Greeting(ctx); err != nil {
		t.Fatal(err)
	}
	uv, un, err := c.Status(ctx, "F&AOk-t")
	if err != nil || uv != 42 || un != 7 {
		t.Errorf("Status = %d, %d, %v; want 42, 7", uv, un, err)
	}
	_, _, err = c.Status(ctx, "Missing")
	var re *ResponseError
	if !errors.As(err, &re) || re.Code != "NONEXISTENT" {
		t.Errorf("Status of a missing mailbox = %v, want NO [NONEXISTENT]", err)
	}
	wait()
}

const exactNotify = "NOTIFY SET STATUS (mailboxes (INBOX Notes) (MessageNew MessageExpunge FlagChange MailboxName)) (personal (MailboxName))"

func nextHint(t *testing.T, c *Client) event.Hint {
	t.Helper()
	h, err := c.Next(ctxT(t))
	if err != nil {
		t.Fatalf("Next: %v", err)
	}
	return h
}

func TestNotifyAndHints(t *testing.T) {
	c, f := watching(t, Options{User: "alice"}, []string{"INBOX", "Notes", "inbox"}, exactNotify,
		"* STATUS INBOX (MESSAGES 1 UIDNEXT 2 UIDVALIDITY 100 UNSEEN 1 HIGHESTMODSEQ 2)",
		"* STATUS Other (MESSAGES 0 UIDNEXT 1 UIDVALIDITY 101 UNSEEN 0 HIGHESTMODSEQ 1)",
		"* STATUS Notes (MESSAGES 0 UIDNEXT 1 UIDVALIDITY 102 UNSEEN 0 HIGHESTMODSEQ 1)")
	f.send(
		"* STATUS Notes (MESSAGES 0 UIDNEXT 1 UIDVALIDITY 102 UNSEEN 0 HIGHESTMODSEQ 1)", // a repeat: nothing
		"* STATUS Other (MESSAGES 5 UIDNEXT 9)",                                          // not watched
		"* 3 EXISTS",                                                                     // never asked for: ignored
		`* FLAGS (\Seen \Answered)`,
		"* XUNKNOWN {5}\r\nab\r\nc trailing",
		"* STATUS INBOX (MESSAGES 2 UIDNEXT 3 UNSEEN 2 HIGHESTMODSEQ 3)",
		"* STATUS inbox (UNSEEN 1 HIGHESTMODSEQ 4)",
		"* STATUS {5}\r\nNotes (HIGHESTMODSEQ 2 APPENDLIMIT NIL)",
		"* STATUS INBOX (MESSAGES 1 UIDNEXT 3 UNSEEN 1 HIGHESTMODSEQ 6)",
		"* STATUS INBOX (MESSAGES 1 UIDNEXT 1 UIDVALIDITY 200)",
	)
	want := []event.Hint{
		{User: "alice", Mailbox: "INBOX", What: event.Arrived, UIDValidity: 100, UIDNext: 3},
		{User: "alice", Mailbox: "INBOX", What: event.Flags, UIDValidity: 100, UIDNext: 3},
		{User: "alice", Mailbox: "Notes", What: event.Flags, UIDValidity: 102, UIDNext: 1},
		{User: "alice", Mailbox: "INBOX", What: event.Expunged, UIDValidity: 100, UIDNext: 3},
		{User: "alice", Mailbox: "INBOX", What: event.Unknown, UIDValidity: 200, UIDNext: 1},
	}
	for i, w := range want {
		if h := nextHint(t, c); h != w {
			t.Errorf("hint %d = %+v, want %+v", i, h, w)
		}
	}
}

func TestListHints(t *testing.T) {
	c, f := watching(t, Options{}, []string{"INBOX", "Notes", "F&AOk-t"},
		"NOTIFY SET STATUS (personal (MessageNew MessageExpunge FlagChange MailboxName))",
		"* STATUS {4}\r\nFét (MESSAGES 0 UIDNEXT 1 UIDVALIDITY 7 UNSEEN 0 HIGHESTMODSEQ 1)",
		"* STATUS Notes (MESSAGES 0 UIDNEXT 1 UIDVALIDITY 8)")
	f.send(
		`* LIST () "/" Other2 ("OLDNAME" (Other))`, // neither name watched
		`* LIST () "/" Notes2 ("OLDNAME" ("Notes"))`,
		`* LIST (\NonExistent) "/" {4}`+"\r\nFét",
		`* LIST (\HasNoChildren) "/" Notes`, // created again
		`* STATUS {4}`+"\r\nFét (MESSAGES 1 UIDNEXT 2 UIDVALIDITY 9)",
		`* LIST () NIL Plain`,
	)
	want := []event.Hint{
		{Mailbox: "Notes", What: event.Gone, UIDValidity: 8, UIDNext: 1},
		{Mailbox: "Fét", What: event.Gone, UIDValidity: 7, UIDNext: 1},
		{Mailbox: "Notes", What: event.Unknown, UIDNext: 1}, // created: empty
		{Mailbox: "Fét", What: event.Unknown, UIDValidity: 9, UIDNext: 2},
	}
	for i, w := range want {
		if h := nextHint(t, c); h != w {
			t.Errorf("hint %d = %+v, want %+v", i, h, w)
		}
	}
}

func TestNotifyFallbacks(t *testing.T) {
	c, f := newPair(t, Options{})
	ctx := ctxT(t)
	wait := script(t, func() {
		f.send("* OK [CAPABILITY IMAP4rev1 NOTIFY] hi")
		f.answer(exactNotify, "NO [NOTIFICATIONOVERFLOW] Too many mailbox names")
		f.answer("NOTIFY SET STATUS (personal (MessageNew MessageExpunge FlagChange MailboxName))", "NO [BADEVENT FlagChange AnnotationChange] Unsupported")
		f.answer("NOTIFY SET STATUS (personal (MessageNew MessageExpunge MailboxName))", "OK done",
			"* STATUS INBOX (MESSAGES 3 UIDNEXT 10 UIDVALIDITY 5)")
	})
	if err := c.Greeting(ctx); err != nil {
		t.Fatal(err)
	}
	st, err := c.Notify(ctx, []string{"INBOX", "Notes"})
	if err != nil {
		t.Fatal(err)
	}
	want := []MailboxStatus{{Mailbox: "INBOX", Name: "INBOX", UIDValidity: 5, UIDNext: 10, Messages: 3}}
	if !slices.Equal(st, want) {
		t.Errorf("statuses = %+v, want %+v", st, want)
	}
	wait()
}

func TestNotifyUnsupported(t *testing.T) {
	c, f := newPair(t, Options{})
	ctx := ctxT(t)
	f.send("* OK [CAPABILITY IMAP4rev1 IDLE] hi")
	if err := c.Greeting(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Notify(ctx, []string{"INBOX"}); err != ErrUnsupported {
		t.Errorf("Notify without the capability = %v, want ErrUnsupported", err)
	}

	c, f = newPair(t, Options{})
	wait := script(t, func() {
		f.send("* OK [CAPABILITY IMAP4rev1 NOTIFY] hi")
		f.answer("NOTIFY SET STATUS (mailboxes (INBOX) (MessageNew MessageExpunge FlagChange MailboxName)) (personal (MailboxName))",
			"NO [BADEVENT MessageNew] no")
	})
	if err := c.Greeting(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Notify(ctx, []string{"INBOX"}); !errors.Is(err, ErrUnsupported) {
		t.Errorf("Notify refused for MessageNew = %v, want ErrUnsupported", err)
	}
	wait()
}

func TestOverflowAndBye(t *testing.T) {
	c, f := watching(t, Options{}, []string{"INBOX"},
		"NOTIFY SET STATUS (mailboxes (INBOX) (MessageNew MessageExpunge FlagChange MailboxName)) (personal (MailboxName))",
		"* STATUS INBOX (MESSAGES 1 UIDNEXT 2 UIDVALIDITY 100)")
	ctx := ctxT(t)
	f.send("* NO NOTIFY error, some events may have got lost")
	if _, err := c.Next(ctx); err != ErrOverflow {
		t.Fatalf("Next after Dovecot's lost-events warning = %v, want ErrOverflow", err)
	}
	f.send("* OK [NOTIFICATIONOVERFLOW] off")
	for range 2 { // NOTIFY is off: until Notify, Next says so at once
		if _, err := c.Next(ctx); err != ErrOverflow {
			t.Fatalf("Next after NOTIFICATIONOVERFLOW = %v, want ErrOverflow", err)
		}
	}
	wait := script(t, func() {
		f.answer("NOTIFY SET STATUS (mailboxes (INBOX) (MessageNew MessageExpunge FlagChange MailboxName)) (personal (MailboxName))",
			"OK done", "* STATUS INBOX (MESSAGES 1 UIDNEXT 2 UIDVALIDITY 100)")
	})
	if st, err := c.Notify(ctx, []string{"INBOX"}); err != nil || len(st) != 1 || st[0].UIDNext != 2 {
		t.Fatalf("Notify again = %+v, %v", st, err)
	}
	wait()
	f.send("* STATUS INBOX (MESSAGES 2 UIDNEXT 3)", "* BYE Server shutting down.")
	if h := nextHint(t, c); h.What != event.Arrived || h.UIDNext != 3 {
		t.Errorf("hint before the BYE = %+v", h)
	}
	_, err := c.Next(ctx)
	if !errors.Is(err, ErrBye) || !strings.Contains(err.Error(), "shutting down") {
		t.Fatalf("Next after BYE = %v, want ErrBye", err)
	}
	if _, err2 := c.Next(ctx); err2 != err {
		t.Errorf("Next again = %v, want the same error", err2)
	}
}

func TestKeepalive(t *testing.T) {
	c, f := watching(t, Options{Keepalive: 50 * time.Millisecond, CommandTimeout: 300 * time.Millisecond}, []string{"INBOX"},
		"NOTIFY SET STATUS (mailboxes (INBOX) (MessageNew MessageExpunge FlagChange MailboxName)) (personal (MailboxName))",
		"* STATUS INBOX (MESSAGES 1 UIDNEXT 2 UIDVALIDITY 100)")
	wait := script(t, func() {
		tag := f.expect("NOOP")
		// The answer comes after a notification: both are handled.
		f.send("* STATUS INBOX (MESSAGES 2 UIDNEXT 3)", tag+" OK NOOP completed")
		f.expect("NOOP") // not answered: the connection counts as dead
	})
	start := time.Now()
	if h := nextHint(t, c); h.What != event.Arrived {
		t.Errorf("hint = %+v", h)
	}
	_, err := c.Next(ctxT(t))
	if err == nil || !strings.Contains(err.Error(), "NOOP") {
		t.Errorf("Next with an unanswered NOOP = %v", err)
	}
	if el := time.Since(start); el < 300*time.Millisecond || el > 5*time.Second {
		t.Errorf("dead connection noticed after %v", el)
	}
	wait()
}

func TestCancelAndClose(t *testing.T) {
	c, f := watching(t, Options{}, []string{"INBOX"},
		"NOTIFY SET STATUS (mailboxes (INBOX) (MessageNew MessageExpunge FlagChange MailboxName)) (personal (MailboxName))",
		"* STATUS INBOX (MESSAGES 1 UIDNEXT 2 UIDVALIDITY 100)")
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	if _, err := c.Next(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Next with a cancelled context = %v", err)
	}
	// Still usable: nothing was consumed.
	f.send("* STATUS INBOX (MESSAGES 2 UIDNEXT 3)")
	if h := nextHint(t, c); h.What != event.Arrived {
		t.Errorf("hint after a cancelled Next = %+v", h)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := c.Next(context.Background())
		errc <- err
	}()
	time.AfterFunc(50*time.Millisecond, func() { c.Close(); c.Close() })
	select {
	case err := <-errc:
		if !errors.Is(err, ErrClosed) {
			t.Errorf("Next after Close = %v, want ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not end a blocked Next")
	}
}

// A notification that arrives while a command runs is kept for Next.
func TestHintDuringCommand(t *testing.T) {
	c, f := watching(t, Options{}, []string{"INBOX", "Notes"}, exactNotify,
		"* STATUS INBOX (MESSAGES 1 UIDNEXT 2 UIDVALIDITY 100)",
		"* STATUS Notes (MESSAGES 1 UIDNEXT 2 UIDVALIDITY 101)")
	ctx := ctxT(t)
	wait := script(t, func() {
		f.answer("STATUS INBOX (UIDVALIDITY UIDNEXT)", "OK done",
			"* STATUS Notes (MESSAGES 2 UIDNEXT 3)",
			"* STATUS INBOX (UIDNEXT 5 UIDVALIDITY 100)")
	})
	if _, un, err := c.Status(ctx, "INBOX"); err != nil || un != 5 {
		t.Fatalf("Status = %d, %v", un, err)
	}
	wait()
	if h := nextHint(t, c); h.Mailbox != "Notes" || h.What != event.Arrived {
		t.Errorf("hint = %+v, want Notes arrived", h)
	}
	// INBOX's new UIDNEXT came as the command's answer: no hint, but the
	// next notification is compared with it.
	f.send("* STATUS INBOX (MESSAGES 1 UIDNEXT 5)", "* STATUS INBOX (MESSAGES 1 UIDNEXT 5 UNSEEN 1)")
	if h := nextHint(t, c); h.Mailbox != "INBOX" || h.What != event.Unknown || h.UIDNext != 5 {
		t.Errorf("hint = %+v, want INBOX unknown (a field not seen before)", h)
	}
}

func TestLongResponses(t *testing.T) {
	c, f := watching(t, Options{MaxResponse: 200}, []string{"INBOX"},
		"NOTIFY SET STATUS (mailboxes (INBOX) (MessageNew MessageExpunge FlagChange MailboxName)) (personal (MailboxName))",
		"* STATUS INBOX (MESSAGES 1 UIDNEXT 2 UIDVALIDITY 100)")
	ctx := ctxT(t)
	f.send("* 1 FETCH (BODY[] {1000}\r\n"+strings.Repeat("x", 1000)+")",
		"* XLONG "+strings.Repeat("y", 500),
		"* STATUS INBOX (MESSAGES 2 UIDNEXT 3)")
	if h := nextHint(t, c); h.What != event.Arrived {
		t.Errorf("hint after skipped responses = %+v", h)
	}
	f.send("* STATUS {300}\r\n" + strings.Repeat("z", 300) + " (MESSAGES 1)")
	if _, err := c.Next(ctx); err != ErrOverflow {
		t.Errorf("Next after a STATUS too long to read = %v, want ErrOverflow", err)
	}
}

func TestStartTLS(t *testing.T) {
	ca := testpki.NewCA(t)
	c, f := newPair(t, Options{})
	ctx := ctxT(t)
	wait := script(t, func() {
		f.send("* OK [CAPABILITY IMAP4rev1 STARTTLS] hi")
		f.answer("STARTTLS", "OK Begin TLS negotiation now.")
		tc := tls.Server(f.conn, &tls.Config{Certificates: []tls.Certificate{ca.ServerCert(t, "imap.example.com")}})
		if err := tc.HandshakeContext(ctx); err != nil {
			f.t.Errorf("server handshake: %v", err)
			return
		}
		f.conn = tc
		f.br.Reset(tc)
		f.answer("CAPABILITY", "OK done", "* CAPABILITY IMAP4rev1 AUTH=PLAIN")
	})
	if err := c.Greeting(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.StartTLS(ctx, &tls.Config{RootCAs: ca.Pool(), ServerName: "imap.example.com"}); err != nil {
		t.Fatal(err)
	}
	if caps, err := c.Capabilities(ctx); err != nil || !slices.Contains(caps, "AUTH=PLAIN") {
		t.Errorf("capabilities over TLS = %q, %v", caps, err)
	}
	wait()
}

// A second Notify takes the first set down before it sets the new one.
func TestNotifyAgain(t *testing.T) {
	c, f := watching(t, Options{}, []string{"INBOX"},
		"NOTIFY SET STATUS (mailboxes (INBOX) (MessageNew MessageExpunge FlagChange MailboxName)) (personal (MailboxName))",
		"* STATUS INBOX (MESSAGES 1 UIDNEXT 2 UIDVALIDITY 100)")
	ctx := ctxT(t)
	wait := script(t, func() {
		f.answer("NOTIFY NONE", "OK done")
		f.answer(exactNotify, "OK done",
			"* STATUS INBOX (MESSAGES 1 UIDNEXT 2 UIDVALIDITY 100)",
			"* STATUS Notes (MESSAGES 4 UIDNEXT 9 UIDVALIDITY 101)")
		f.answer("NOTIFY NONE", "OK done")
		f.send("* STATUS INBOX (MESSAGES 2 UIDNEXT 3)") // late: not watched any more
	})
	st, err := c.Notify(ctx, []string{"INBOX", "Notes"})
	if err != nil || len(st) != 2 || st[1] != (MailboxStatus{Mailbox: "Notes", Name: "Notes", UIDValidity: 101, UIDNext: 9, Messages: 4}) {
		t.Fatalf("Notify again = %+v, %v", st, err)
	}
	if st, err := c.Notify(ctx, nil); err != nil || st != nil {
		t.Fatalf("Notify(nil) = %+v, %v", st, err)
	}
	wait()
	wctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if h, err := c.Next(wctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Next with nothing watched = %+v, %v; want to wait", h, err)
	}
}
