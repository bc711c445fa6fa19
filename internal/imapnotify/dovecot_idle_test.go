package imapnotify

import (
	"context"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"

	"github.com/xapsproxy/xapsproxy/internal/dovecottest"
)

// idleAlice logs in to d as alice through the master user, examines INBOX
// and starts IDLE.
func idleAlice(t *testing.T, d *dovecottest.Dovecot) (*Client, *recConn, Mailbox) {
	t.Helper()
	c, rec := connectRec(t, d, Options{User: "alice"})
	ctx := ctxT(t)
	if err := c.Login(ctx, "alice*"+d.MasterUser, d.MasterPassword); err != nil {
		t.Fatal(err)
	}
	mb, err := c.Examine(ctx, "INBOX")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Idle(ctx, 0); err != nil {
		t.Fatal(err)
	}
	return c, rec, mb
}

// waitUpdate returns the next update, failing after 10 s.
func waitUpdate(t *testing.T, c *Client) Update {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	u, err := c.NextUpdate(ctx)
	if err != nil {
		t.Fatalf("NextUpdate: %v", err)
	}
	return u
}

// What Dovecot says in IDLE: EXISTS (and the new message's flags) for new
// mail, FETCH for a flag change, EXPUNGE; DONE is answered, and IDLE
// starts again. What it sent is logged, for the fuzz seeds.
func TestDovecotIdle(t *testing.T) {
	t.Parallel()
	d := dovecottest.Start(t, dovecottest.Options{})
	for range 2 {
		d.Deliver(t, "alice@example.com", []byte(testMsg))
	}
	st := d.Doveadm(t, "mailbox", "status", "-u", "alice", "uidvalidity", "INBOX")
	c, rec, mb := idleAlice(t, d)
	if mb.Messages != 2 || mb.UIDNext != 3 || !strings.Contains(st, "uidvalidity="+strconv.FormatUint(uint64(mb.UIDValidity), 10)) {
		t.Fatalf("Examine = %+v; doveadm says %q", mb, st)
	}
	setUp := len(rec.read)

	d.Deliver(t, "alice@example.com", []byte(testMsg))
	if u := waitUpdate(t, c); u != (Update{Kind: UpdateExists, Num: 3}) {
		t.Fatalf("update after a delivery = %+v, want EXISTS 3", u)
	}

	o := other(t, d)
	if _, err := o.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	seen := &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagSeen}, Silent: true}
	if err := o.Store(imap.SeqSetNum(1), seen, nil).Close(); err != nil {
		t.Fatal(err)
	}
	if u := waitUpdate(t, c); u != (Update{Kind: UpdateFetch, Num: 1}) {
		t.Fatalf("update after STORE = %+v, want FETCH 1", u)
	}
	d.Doveadm(t, "expunge", "-u", "alice", "mailbox", "INBOX", "uid", "2")
	if u := waitUpdate(t, c); u != (Update{Kind: UpdateExpunge, Num: 2}) {
		t.Fatalf("update after an expunge = %+v, want EXPUNGE 2", u)
	}
	t.Logf("Dovecot in IDLE: %q", rec.read[setUp:])

	ctx := ctxT(t)
	if err := c.Done(ctx); err != nil {
		t.Fatal(err)
	}
	if u, ok := c.TakeUpdate(); ok {
		t.Errorf("update after DONE: %+v", u)
	}
	if mb, err := c.Examine(ctx, "INBOX"); err != nil || mb.Messages != 2 || mb.UIDNext != 4 {
		t.Fatalf("Examine again = %+v, %v", mb, err)
	}
	if err := c.Idle(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if err := c.Done(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Logout(ctx); err != nil {
		t.Error(err)
	}
}

// A hibernated IDLE connection woken by new mail gets EXISTS, and then
// FETCH of \Recent alone for the message it had: Update.OnlyRecent.
func TestDovecotIdleHibernated(t *testing.T) {
	t.Parallel()
	d := dovecottest.Start(t, dovecottest.Options{Hibernate: true})
	d.Deliver(t, "alice@example.com", []byte(testMsg))
	c, rec, _ := idleAlice(t, d)
	setUp := len(rec.read)
	waitHibernated(t, d, "alice")

	d.Deliver(t, "alice@example.com", []byte(testMsg))
	if u := waitUpdate(t, c); u != (Update{Kind: UpdateExists, Num: 2}) {
		t.Fatalf("update after a delivery to a hibernated IDLE: %+v, want EXISTS 2", u)
	}
	// Dovecot sends the FETCH right after; it is read with DONE's answer.
	if err := c.Done(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	t.Logf("Dovecot in IDLE after hibernation: %q", rec.read[setUp:])
	u, ok := c.TakeUpdate()
	if want := (Update{Kind: UpdateFetch, Num: 1, OnlyRecent: true}); !ok || u != want {
		t.Errorf("update after EXISTS = %+v (%v), want %+v", u, ok, want)
	}
	if u, ok := c.TakeUpdate(); ok {
		t.Errorf("another update: %+v", u)
	}
}

// waitHibernated waits until user's only session is held by imap-hibernate.
func waitHibernated(t *testing.T, d *dovecottest.Dovecot, user string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var pids []string
		for line := range strings.Lines(d.Doveadm(t, "who", "-1")) {
			if f := strings.Fields(line); len(f) >= 3 && f[0] == user {
				pids = append(pids, f[2])
			}
		}
		if len(pids) == 1 {
			comm, err := os.ReadFile("/proc/" + pids[0] + "/comm")
			if err == nil && strings.TrimSpace(string(comm)) == "imap-hibernate" {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s's session did not hibernate", user)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
