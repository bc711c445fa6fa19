package imapnotify

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

// examined returns a client that has greeted and examined INBOX (with
// three messages), and its server.
func examined(t *testing.T, opts Options) (*Client, *fake) {
	t.Helper()
	c, f := newPair(t, opts)
	ctx := ctxT(t)
	wait := script(t, func() {
		f.send("* OK [CAPABILITY IMAP4rev1 LITERAL+ IDLE] ready")
		f.answer("EXAMINE INBOX", "OK [READ-ONLY] Examine completed (0.001 + 0.000 secs).",
			`* FLAGS (\Answered \Flagged \Deleted \Seen \Draft)`,
			`* OK [PERMANENTFLAGS ()] Read-only mailbox.`,
			"* 3 EXISTS",
			"* 0 RECENT",
			"* OK [UIDVALIDITY 1796175778] UIDs valid",
			"* OK [UIDNEXT 4] Predicted next UID",
			"* OK [HIGHESTMODSEQ 7] Highest")
	})
	if err := c.Greeting(ctx); err != nil {
		t.Fatal(err)
	}
	mb, err := c.Examine(ctx, "INBOX")
	if err != nil {
		t.Fatal(err)
	}
	if want := (Mailbox{UIDValidity: 1796175778, UIDNext: 4, Messages: 3}); mb != want {
		t.Fatalf("Examine = %+v, want %+v", mb, want)
	}
	wait()
	return c, f
}

// idling returns an examined client in IDLE, and its server.
func idling(t *testing.T, opts Options) (*Client, *fake, string) {
	t.Helper()
	c, f := examined(t, opts)
	var tag string
	wait := script(t, func() {
		tag = f.expect("IDLE")
		f.send("+ idling")
	})
	if err := c.Idle(ctxT(t), 0); err != nil {
		t.Fatal(err)
	}
	wait()
	return c, f, tag
}

func nextUpdate(t *testing.T, c *Client) Update {
	t.Helper()
	u, err := c.NextUpdate(ctxT(t))
	if err != nil {
		t.Fatalf("NextUpdate: %v", err)
	}
	return u
}

func TestExamine(t *testing.T) {
	c, f := examined(t, Options{})
	ctx := ctxT(t)
	wait := script(t, func() {
		// Another mailbox: what is said of it, and nothing of the first.
		f.answer(`EXAMINE "My Folder"`, "OK [READ-ONLY] done",
			"* OK [CLOSED] Previous mailbox closed.",
			"* 0 EXISTS",
			"* OK [UIDVALIDITY 9] x",
			"* OK [UIDNEXT 1] x")
		f.answer("EXAMINE F&AOk-t", "NO [NONEXISTENT] Mailbox doesn't exist: Fét")
		f.answer("EXAMINE Weird", "OK done", "* 2 EXISTS") // no UIDVALIDITY, UIDNEXT
	})
	mb, err := c.Examine(ctx, "My Folder")
	if want := (Mailbox{UIDValidity: 9, UIDNext: 1}); err != nil || mb != want {
		t.Errorf("Examine = %+v, %v; want %+v", mb, err, want)
	}
	_, err = c.Examine(ctx, "F&AOk-t")
	var re *ResponseError
	if !errors.As(err, &re) || re.Code != "NONEXISTENT" || re.Command != "EXAMINE" {
		t.Errorf("Examine of a missing mailbox = %v, want NO [NONEXISTENT]", err)
	}
	if mb, err := c.Examine(ctx, "Weird"); err != nil || mb != (Mailbox{Messages: 2}) {
		t.Errorf("Examine without the codes = %+v, %v", mb, err)
	}
	wait()
	if _, ok := c.TakeUpdate(); ok {
		t.Error("EXISTS in EXAMINE's answers kept as an update")
	}
}

// Every update the server sends in IDLE is returned, in order; what is
// not an update is skipped.
func TestIdleUpdates(t *testing.T) {
	c, f, tag := idling(t, Options{})
	f.send(
		"* OK Still here",
		"* 4 EXISTS",
		"* 1 RECENT",
		`* 4 FETCH (FLAGS (\Recent))`,
		`* 2 FETCH (UID 2 FLAGS (\Seen \Recent) MODSEQ (12))`,
		`* 3 FETCH (FLAGS (Recent))`, // a keyword, not \Recent
		`* 3 FETCH (MODSEQ (13) FLAGS (\Recent))`,
		`* 1 FETCH (FLAGS ())`,
		`* 1 FETCH (UID 1)`,
		`* 2 FETCH (FLAGS (\Recent) BODY[HEADER.FIELDS (SUBJECT)] {4}`+"\r\nab\r\n)",
		`* FLAGS (\Seen $Forwarded)`,
		"* 2 EXPUNGE",
		"* 2 EXISTS",
	)
	want := []Update{
		{Kind: UpdateExists, Num: 4},
		{Kind: UpdateFetch, Num: 4, OnlyRecent: true},
		{Kind: UpdateFetch, Num: 2},
		{Kind: UpdateFetch, Num: 3},
		{Kind: UpdateFetch, Num: 3, OnlyRecent: true},
		{Kind: UpdateFetch, Num: 1},
		{Kind: UpdateFetch, Num: 1},
		{Kind: UpdateFetch, Num: 2}, // not understood whole: not \Recent alone
		{Kind: UpdateExpunge, Num: 2},
		{Kind: UpdateExists, Num: 2},
	}
	for i, w := range want {
		if u := nextUpdate(t, c); u != w {
			t.Errorf("update %d = %+v, want %+v", i, u, w)
		}
	}
	// DONE: what comes before the answer is kept.
	wait := script(t, func() {
		if l := f.line(); l != "DONE" {
			f.t.Errorf("server read %q, want DONE", l)
		}
		f.send("* 5 EXISTS", `* 5 FETCH (FLAGS (\Seen))`, tag+" OK Idle completed (0.001 + 1.000 secs).")
		f.answer("STATUS Notes (UIDVALIDITY UIDNEXT)", "OK done",
			"* STATUS Notes (UIDVALIDITY 5 UIDNEXT 6)", "* 3 EXPUNGE")
	})
	if err := c.Done(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Status(ctxT(t), "Notes"); err != nil {
		t.Fatal(err)
	}
	wait()
	var got []Update
	for u, ok := c.TakeUpdate(); ok; u, ok = c.TakeUpdate() {
		got = append(got, u)
	}
	want = []Update{{Kind: UpdateExists, Num: 5}, {Kind: UpdateFetch, Num: 5}, {Kind: UpdateExpunge, Num: 3}}
	if !slices.Equal(got, want) {
		t.Errorf("updates with the answers = %+v, want %+v", got, want)
	}
	if _, err := c.NextUpdate(ctxT(t)); err == nil || c.usable() != nil {
		t.Errorf("NextUpdate outside IDLE = %v (usable: %v), want a harmless error", err, c.usable())
	}
}

// Waiting in IDLE ends with ctx, and after MaxIdle (or the shorter time
// Idle was given), leaving the connection usable; DONE is answered and
// IDLE can start again.
func TestIdleWaitEnds(t *testing.T) {
	c, f, tag := idling(t, Options{MaxIdle: 300 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := c.NextUpdate(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("NextUpdate with ctx ending = %v, want its error", err)
	}
	start := time.Now()
	if _, err := c.NextUpdate(ctxT(t)); err != ErrIdleExpired {
		t.Fatalf("NextUpdate past MaxIdle = %v, want ErrIdleExpired", err)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("ErrIdleExpired after %v, want about 250ms", took)
	}
	// Commands are refused until DONE.
	if _, _, err := c.Status(ctxT(t), "INBOX"); err == nil || c.usable() != nil {
		t.Errorf("Status in IDLE = %v, want a harmless error", err)
	}
	if err := c.Idle(ctxT(t), 0); err == nil || c.usable() != nil {
		t.Errorf("Idle in IDLE = %v, want a harmless error", err)
	}
	wait := script(t, func() {
		if l := f.line(); l != "DONE" {
			f.t.Errorf("server read %q, want DONE", l)
		}
		f.send(tag + " OK Idle completed")
		tag2 := f.expect("IDLE")
		f.send("* 4 EXISTS", "+ idling") // an update before the continuation
		f.line()                         // DONE
		f.send(tag2 + " NO Nope")
		f.answer("IDLE", "BAD [CLIENTBUG] Nope")
	})
	if err := c.Done(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if err := c.Idle(ctxT(t), 100*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if u := nextUpdate(t, c); u != (Update{Kind: UpdateExists, Num: 4}) {
		t.Errorf("update = %+v", u)
	}
	start = time.Now()
	if _, err := c.NextUpdate(ctxT(t)); err != ErrIdleExpired {
		t.Fatalf("NextUpdate past the IDLE's time = %v, want ErrIdleExpired", err)
	}
	if took := time.Since(start); took > 250*time.Millisecond {
		t.Errorf("ErrIdleExpired after %v, want about 100ms", took)
	}
	var re *ResponseError
	if err := c.Done(ctxT(t)); !errors.As(err, &re) || re.Status != "NO" {
		t.Errorf("Done answered NO = %v", err)
	}
	if err := c.Done(ctxT(t)); err == nil {
		t.Error("Done outside IDLE succeeded")
	}
	if err := c.Idle(ctxT(t), 0); !errors.As(err, &re) || re.Status != "BAD" || c.usable() != nil {
		t.Errorf("Idle refused = %v (usable: %v), want a BAD", err, c.usable())
	}
	wait()
}

// Interrupt ends the wait in progress, or the next one; one that comes
// while a command runs waits for the next wait and leaves the command
// alone.
func TestIdleInterrupt(t *testing.T) {
	c, f, tag := idling(t, Options{})
	done := make(chan error, 1)
	go func() { _, err := c.NextUpdate(ctxT(t)); done <- err }()
	time.AfterFunc(20*time.Millisecond, c.Interrupt)
	select {
	case err := <-done:
		if err != ErrInterrupted {
			t.Fatalf("NextUpdate interrupted = %v, want ErrInterrupted", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Interrupt did not end the wait")
	}
	// Before the wait: the next wait ends at once, the one after waits.
	c.Interrupt()
	if _, err := c.NextUpdate(ctxT(t)); err != ErrInterrupted {
		t.Fatalf("NextUpdate after Interrupt = %v, want ErrInterrupted", err)
	}
	f.send("* 4 EXISTS")
	if u := nextUpdate(t, c); u.Kind != UpdateExists {
		t.Fatalf("update = %+v", u)
	}
	// While DONE's answer is awaited.
	wait := script(t, func() {
		f.line() // DONE
		c.Interrupt()
		f.send(tag + " OK Idle completed")
		f.expect("IDLE")
		f.send("+ idling")
	})
	if err := c.Done(ctxT(t)); err != nil {
		t.Fatalf("Done, interrupted meanwhile: %v", err)
	}
	if err := c.Idle(ctxT(t), 0); err != nil {
		t.Fatal(err)
	}
	wait()
	if _, err := c.NextUpdate(ctxT(t)); err != ErrInterrupted {
		t.Fatalf("NextUpdate after an Interrupt during DONE = %v, want ErrInterrupted", err)
	}
	if c.usable() != nil {
		t.Errorf("the client is unusable: %v", c.usable())
	}
	c.Close()
	c.Interrupt() // after Close: nothing
}

// A BYE in IDLE ends the connection, as does the server ending IDLE on its
// own or a continuation request in IDLE.
func TestIdleFatal(t *testing.T) {
	for _, tc := range []struct {
		name string
		send func(tag string) string
		want string
	}{
		{"bye", func(string) string { return "* BYE Server shutting down." }, "Server shutting down"},
		{"tagged", func(tag string) string { return tag + " OK Idle timed out" }, "ended IDLE"},
		{"continuation", func(string) string { return "+ again" }, "continuation"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, f, tag := idling(t, Options{})
			f.send("* 4 EXISTS", tc.send(tag))
			if u := nextUpdate(t, c); u.Kind != UpdateExists {
				t.Errorf("update = %+v", u)
			}
			_, err := c.NextUpdate(ctxT(t))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("NextUpdate = %v, want an error with %q", err, tc.want)
			}
			if tc.name == "bye" && !errors.Is(err, ErrBye) {
				t.Errorf("NextUpdate = %v, want ErrBye", err)
			}
			if c.usable() == nil {
				t.Error("the client is still usable")
			}
			if _, err2 := c.NextUpdate(ctxT(t)); err2 != err {
				t.Errorf("NextUpdate again = %v, want the same error", err2)
			}
		})
	}
}

// IDLE answered OK without "+" is out of step.
func TestIdleWithoutContinuation(t *testing.T) {
	c, f := examined(t, Options{})
	wait := script(t, func() { f.answer("IDLE", "OK done") })
	if err := c.Idle(ctxT(t), 0); err == nil || c.usable() == nil {
		t.Fatalf("Idle answered OK at once = %v, want a fatal error", err)
	}
	wait()
}

// Close from another goroutine ends a wait in IDLE.
func TestIdleClose(t *testing.T) {
	c, _, _ := idling(t, Options{})
	done := make(chan error, 1)
	go func() { _, err := c.NextUpdate(context.Background()); done <- err }()
	time.AfterFunc(20*time.Millisecond, func() { c.Close() })
	select {
	case err := <-done:
		if !errors.Is(err, ErrClosed) {
			t.Errorf("NextUpdate after Close = %v, want ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("NextUpdate did not return after Close")
	}
}

// Updates that pile up during one command are bounded.
func TestUpdatesBounded(t *testing.T) {
	c, f := examined(t, Options{})
	var sb strings.Builder
	for range maxUpdates + 10 {
		sb.WriteString("* 1 FETCH (FLAGS (\\Seen))\r\n")
	}
	wait := script(t, func() {
		tag := f.expect("STATUS INBOX (UIDVALIDITY UIDNEXT)")
		f.send(sb.String() + "* STATUS INBOX (UIDVALIDITY 1 UIDNEXT 2)\r\n" + tag + " OK done")
	})
	if _, _, err := c.Status(ctxT(t), "INBOX"); err != nil {
		t.Fatal(err)
	}
	wait()
	n, lost := 0, 0
	for u, ok := c.TakeUpdate(); ok; u, ok = c.TakeUpdate() {
		n++
		if u.Kind == UpdateLost {
			lost++
		}
	}
	if n != maxUpdates+1 || lost != 1 {
		t.Errorf("%d updates kept, %d of them lost markers; want %d and 1", n, lost, maxUpdates+1)
	}
}
