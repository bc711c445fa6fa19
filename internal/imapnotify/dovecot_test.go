package imapnotify

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/xapsproxy/xapsproxy/event"
	"github.com/xapsproxy/xapsproxy/internal/dovecottest"
	"github.com/xapsproxy/xapsproxy/internal/testlog"
)

// detailDelivery lets LMTP deliver alice+Notes@example.com into Notes.
const detailDelivery = "recipient_delimiter = +\nlmtp_save_to_detail_mailbox = yes\n"

const testMsg = "From: bob@example.com\r\nTo: alice@example.com\r\nSubject: hello\r\n\r\nHi Alice.\r\n"

// recConn keeps everything read from the connection.
type recConn struct {
	net.Conn
	read []byte // only the client's goroutine reads
}

func (r *recConn) Read(p []byte) (int, error) {
	n, err := r.Conn.Read(p)
	r.read = append(r.read, p[:n]...)
	return n, err
}

// connect dials d and reads the greeting.
func connect(t *testing.T, d *dovecottest.Dovecot, opts Options) *Client {
	t.Helper()
	c, _ := connectRec(t, d, opts)
	return c
}

// connectRec is connect, also returning what the client reads.
func connectRec(t *testing.T, d *dovecottest.Dovecot, opts Options) (*Client, *recConn) {
	t.Helper()
	tcp, err := net.Dial("tcp", d.IMAPAddr)
	if err != nil {
		t.Fatal(err)
	}
	conn := &recConn{Conn: tcp}
	if opts.Logger == nil {
		opts.Logger = testlog.New(t, d.MasterPassword, "alicepw")
	}
	c := New(conn, opts)
	t.Cleanup(func() { c.Close() })
	if err := c.Greeting(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	return c, conn
}

// watchAlice logs in to d as alice through the master user and sets
// NOTIFY for mailboxes.
func watchAlice(t *testing.T, d *dovecottest.Dovecot, mailboxes ...string) (*Client, []MailboxStatus) {
	t.Helper()
	c, _, st := watchAliceRec(t, d, mailboxes...)
	return c, st
}

func watchAliceRec(t *testing.T, d *dovecottest.Dovecot, mailboxes ...string) (*Client, *recConn, []MailboxStatus) {
	t.Helper()
	c, rec := connectRec(t, d, Options{User: "alice"})
	ctx := ctxT(t)
	if err := c.Login(ctx, "alice*"+d.MasterUser, d.MasterPassword); err != nil {
		t.Fatal(err)
	}
	st, err := c.Notify(ctx, mailboxes)
	if err != nil {
		t.Fatal(err)
	}
	return c, rec, st
}

// other is a second, ordinary IMAP session of alice's that changes things.
func other(t *testing.T, d *dovecottest.Dovecot) *imapclient.Client {
	t.Helper()
	c, err := imapclient.DialInsecure(d.IMAPAddr, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Login("alice", "alicepw").Wait(); err != nil {
		t.Fatal(err)
	}
	return c
}

func appendMsg(t *testing.T, c *imapclient.Client, mailbox string) {
	t.Helper()
	cmd := c.Append(mailbox, int64(len(testMsg)), nil)
	if _, err := cmd.Write([]byte(testMsg)); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := cmd.Wait(); err != nil {
		t.Fatalf("APPEND %s: %v", mailbox, err)
	}
}

// waitHint returns the next hint, failing after 10 s.
func waitHint(t *testing.T, c *Client) event.Hint {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h, err := c.Next(ctx)
	if err != nil {
		t.Fatalf("Next: %v", err)
	}
	t.Logf("hint: %s %s uidvalidity=%d uidnext=%d", h.Mailbox, h.What, h.UIDValidity, h.UIDNext)
	return h
}

func wantHint(t *testing.T, c *Client, mailbox string, what event.What) event.Hint {
	t.Helper()
	h := waitHint(t, c)
	if h.Mailbox != mailbox || h.What != what || h.User != "alice" {
		t.Fatalf("hint = %+v, want alice's %s %s", h, mailbox, what)
	}
	return h
}

func TestDovecotLogin(t *testing.T) {
	t.Parallel()
	d := dovecottest.Start(t, dovecottest.Options{})
	d.Deliver(t, "alice@example.com", []byte(testMsg))
	ctx := ctxT(t)
	for _, login := range [][2]string{{"alice*" + d.MasterUser, d.MasterPassword}, {"alice", "alicepw"}} {
		c := connect(t, d, Options{})
		if err := c.Login(ctx, login[0], login[1]); err != nil {
			t.Fatalf("LOGIN %s: %v", login[0], err)
		}
		caps, err := c.Capabilities(ctx)
		if err != nil || !slices.Contains(caps, "NOTIFY") {
			t.Fatalf("capabilities after LOGIN %s = %q, %v; want NOTIFY", login[0], caps, err)
		}
		if st, err := c.Notify(ctx, []string{"INBOX", "Notes"}); err != nil || len(st) != 1 || st[0].Mailbox != "INBOX" || st[0].UIDNext != 2 {
			t.Fatalf("Notify after LOGIN %s = %+v, %v; want INBOX's status", login[0], st, err)
		}
		if err := c.Logout(ctx); err != nil {
			t.Errorf("LOGOUT: %v", err)
		}
	}
	c := connect(t, d, Options{})
	err := c.Login(ctx, "alice", "wrong")
	var re *ResponseError
	if !errors.As(err, &re) || re.Code != "AUTHENTICATIONFAILED" || re.Temporary() {
		t.Fatalf("wrong password: %v, want a permanent NO [AUTHENTICATIONFAILED]", err)
	}
	// The connection stays usable after a refusal.
	if err := c.Login(ctx, "alice*"+d.MasterUser, d.MasterPassword); err != nil {
		t.Errorf("LOGIN after a refusal: %v", err)
	}
}

// The same events through both filters: "mailboxes" for plain names,
// "personal" when a watched name is not plain ASCII.
func TestDovecotHints(t *testing.T) {
	for _, mode := range []string{"mailboxes", "personal"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			d := dovecottest.Start(t, dovecottest.Options{})
			d.Doveadm(t, "mailbox", "create", "-u", "alice", "Notes", "Other", "Fét")
			watched := []string{"INBOX", "Notes"}
			if mode == "personal" {
				watched = append(watched, "F&AOk-t")
			}
			c, rec, st := watchAliceRec(t, d, watched...)
			setUp := len(rec.read)
			var names []string
			for _, s := range st {
				names = append(names, s.Mailbox)
				if s.UIDValidity == 0 || s.UIDNext != 1 || s.Messages != 0 || s.HighestModSeq == 0 {
					t.Errorf("initial status %+v", s)
				}
			}
			sort.Strings(names)
			want := []string{"INBOX", "Notes"}
			if mode == "personal" {
				want = []string{"Fét", "INBOX", "Notes"}
			}
			if !slices.Equal(names, want) {
				t.Errorf("Notify's statuses name %q, want %q", names, want)
			}

			d.Deliver(t, "alice@example.com", []byte(testMsg))
			if h := wantHint(t, c, "INBOX", event.Arrived); h.UIDNext != 2 || h.UIDValidity == 0 {
				t.Errorf("INBOX hint %+v, want UIDNEXT 2 and a UIDVALIDITY", h)
			}

			// Nothing for Other: the next hint is the next watched event's.
			o := other(t, d)
			appendMsg(t, o, "Other")
			appendMsg(t, o, "Notes")
			if h := wantHint(t, c, "Notes", event.Arrived); h.UIDNext != 2 {
				t.Errorf("Notes hint %+v, want UIDNEXT 2", h)
			}
			// With the "mailboxes" filter Dovecot does not even tell.
			sawOther := strings.Contains(string(rec.read[setUp:]), "STATUS Other")
			if sawOther != (mode == "personal") {
				t.Errorf("a STATUS of Other came: %v, want %v; read since NOTIFY:\n%s", sawOther, mode == "personal", rec.read[setUp:])
			}
			if mode == "personal" {
				appendMsg(t, o, "Fét")
				wantHint(t, c, "Fét", event.Arrived)
			}

			if _, err := o.Select("INBOX", nil).Wait(); err != nil {
				t.Fatal(err)
			}
			store := func(flag imap.Flag) {
				t.Helper()
				if err := o.Store(imap.SeqSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{flag}, Silent: true}, nil).Close(); err != nil {
					t.Fatal(err)
				}
			}
			store(imap.FlagSeen) // STATUS INBOX (UNSEEN 0 HIGHESTMODSEQ n)
			wantHint(t, c, "INBOX", event.Flags)
			store(imap.FlagFlagged) // STATUS INBOX (HIGHESTMODSEQ n)
			wantHint(t, c, "INBOX", event.Flags)
			store(imap.FlagDeleted)
			if err := o.Expunge().Close(); err != nil {
				t.Fatal(err)
			}
			// \Deleted and the expunge may come as one STATUS or two.
			h := waitHint(t, c)
			if h.What == event.Flags {
				h = waitHint(t, c)
			}
			if h.Mailbox != "INBOX" || h.What != event.Expunged || h.UIDNext != 2 {
				t.Errorf("hint after EXPUNGE = %+v, want INBOX expunged, UIDNEXT 2", h)
			}

			if err := o.Rename("Notes", "Notes2", nil).Wait(); err != nil {
				t.Fatal(err)
			}
			wantHint(t, c, "Notes", event.Gone)
			if err := o.Rename("Notes2", "Notes", nil).Wait(); err != nil {
				t.Fatal(err)
			}
			wantHint(t, c, "Notes", event.Unknown) // back under the watched name
			// Dovecot follows with a STATUS of it, which has nothing to be
			// compared with: another Unknown, perhaps.
			skip := func() event.Hint {
				t.Helper()
				h := waitHint(t, c)
				if h.Mailbox == "Notes" && h.What == event.Unknown {
					h = waitHint(t, c)
				}
				return h
			}
			if mode == "personal" {
				if err := o.Delete("Fét").Wait(); err != nil {
					t.Fatal(err)
				}
				if h := skip(); h.Mailbox != "Fét" || h.What != event.Gone {
					t.Fatalf("hint = %+v, want Fét gone", h)
				}
			}
			if err := o.Delete("Other").Wait(); err != nil { // not watched: nothing
				t.Fatal(err)
			}
			d.Deliver(t, "alice@example.com", []byte(testMsg))
			if h := skip(); h.Mailbox != "INBOX" || h.What != event.Arrived || h.UIDNext != 3 {
				t.Errorf("hint %+v, want INBOX arrived, UIDNEXT 3", h)
			}
		})
	}
}

// Delivery -> hint latency for INBOX and another mailbox: Dovecot sends
// NOTIFY's STATUS about 0.5 s after the change.
func TestDovecotLatency(t *testing.T) {
	d := dovecottest.Start(t, dovecottest.Options{ExtraConfig: detailDelivery})
	d.Doveadm(t, "mailbox", "create", "-u", "alice", "Notes")
	c, _ := watchAlice(t, d, "INBOX", "Notes")
	const rounds = 20
	lat := map[string][]time.Duration{}
	for i := 0; i < rounds; i++ {
		sent := map[string]time.Time{}
		d.Deliver(t, "alice@example.com", []byte(testMsg))
		sent["INBOX"] = time.Now()
		d.Deliver(t, "alice+Notes@example.com", []byte(testMsg))
		sent["Notes"] = time.Now()
		for len(sent) > 0 {
			h := waitHint(t, c)
			at, ok := sent[h.Mailbox]
			if !ok || h.What != event.Arrived || h.UIDNext != uint32(i+2) {
				t.Fatalf("round %d: hint %+v, want an arrival with UIDNEXT %d", i, h, i+2)
			}
			lat[h.Mailbox] = append(lat[h.Mailbox], time.Since(at))
			delete(sent, h.Mailbox)
		}
	}
	for _, m := range []string{"INBOX", "Notes"} {
		l := lat[m]
		slices.Sort(l)
		p50, p90 := l[len(l)/2], l[len(l)*9/10]
		t.Logf("delivery -> hint, %s, %d deliveries: p50 %v, p90 %v, max %v", m, len(l), p50.Round(time.Millisecond), p90.Round(time.Millisecond), l[len(l)-1].Round(time.Millisecond))
		if p90 > 3*time.Second {
			t.Errorf("%s: p90 latency %v, want about 0.5 s", m, p90)
		}
	}
}

// A short keepalive on a real Dovecot: NOOPs go out and are answered, and
// hints still come.
func TestDovecotKeepalive(t *testing.T) {
	t.Parallel()
	d := dovecottest.Start(t, dovecottest.Options{})
	c := connect(t, d, Options{User: "alice", Keepalive: 100 * time.Millisecond, CommandTimeout: 5 * time.Second})
	ctx := ctxT(t)
	if err := c.Login(ctx, "alice*"+d.MasterUser, d.MasterPassword); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Notify(ctx, []string{"INBOX"}); err != nil {
		t.Fatal(err)
	}
	tags := c.tagN
	// Waiting for nothing: Next returns at the context's end, having kept
	// the connection alive meanwhile.
	wctx, cancel := context.WithTimeout(ctx, 700*time.Millisecond)
	_, err := c.Next(wctx)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Next = %v, want the deadline", err)
	}
	if n := c.tagN - tags; n < 3 {
		t.Errorf("%d NOOPs in 0.7 s with a 0.1 s keepalive", n)
	}
	// The first delivery creates INBOX: a LIST, then its STATUS.
	d.Deliver(t, "alice@example.com", []byte(testMsg))
	wantHint(t, c, "INBOX", event.Unknown)
	if h := wantHint(t, c, "INBOX", event.Arrived); h.UIDNext != 2 {
		t.Errorf("hint %+v, want UIDNEXT 2", h)
	}
	if log := d.Log(); strings.Contains(log, "Disconnected") && strings.Contains(log, "imap(alice)") {
		t.Logf("dovecot log:\n%s", log)
	}
}

func TestDovecotManyMailboxes(t *testing.T) {
	t.Parallel()
	d := dovecottest.Start(t, dovecottest.Options{})
	var boxes []string
	for i := 0; i < maxFilterNames+5; i++ {
		boxes = append(boxes, fmt.Sprintf("Box%d", i))
	}
	d.Doveadm(t, append([]string{"mailbox", "create", "-u", "alice"}, boxes[100:]...)...)
	// More names than Dovecot takes in a filter: "personal" it is.
	c, st := watchAlice(t, d, append(boxes, "INBOX")...)
	if len(st) != 6 {
		t.Errorf("%d statuses, want 6 (INBOX and the 5 boxes that exist)", len(st))
	}
	o := other(t, d)
	appendMsg(t, o, "Box103")
	wantHint(t, c, "Box103", event.Arrived)
}

// Notify again replaces the set on the same connection (Dovecot goes
// silent if one NOTIFY SET follows another without NONE between); Dovecot
// stopping or crashing ends Next.
func TestDovecotNotifyAgainAndStop(t *testing.T) {
	t.Parallel()
	d := dovecottest.Start(t, dovecottest.Options{})
	d.Doveadm(t, "mailbox", "create", "-u", "alice", "INBOX", "Notes")
	c, st := watchAlice(t, d, "INBOX")
	if len(st) != 1 {
		t.Fatalf("statuses %+v", st)
	}
	o := other(t, d)
	ctx := ctxT(t)
	if st, err := c.Notify(ctx, []string{"INBOX", "Notes"}); err != nil || len(st) != 2 {
		t.Fatalf("Notify again = %+v, %v", st, err)
	}
	appendMsg(t, o, "Notes")
	wantHint(t, c, "Notes", event.Arrived)

	d.Stop(t) // the imap process is ended without a BYE
	if _, err := c.Next(ctx); err == nil || errors.Is(err, ctx.Err()) {
		t.Errorf("Next when Dovecot stops = %v, want a connection error", err)
	}
	d.Restart(t)
	c, _ = watchAlice(t, d, "INBOX")
	d.Kill(t)
	if _, err := c.Next(ctx); err == nil || errors.Is(err, ctx.Err()) {
		t.Errorf("Next when Dovecot is killed = %v, want a connection error", err)
	}
}
