package dovecot_test

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/xapsproxy/xapsproxy/dovecot"
	"github.com/xapsproxy/xapsproxy/event"
	"github.com/xapsproxy/xapsproxy/internal/dovecottest"
)

// These tests run the shipped contrib/dovecot/95-xapsproxy.conf and
// xapsproxy.lua in a real Dovecot, posting to the real Handler. Dovecot
// posts before it answers the command or delivery that caused the event, so
// every request has arrived by the time the client has its answer.

func imapLogin(t *testing.T, d *dovecottest.Dovecot, user string) *imapclient.Client {
	t.Helper()
	c, err := imapclient.DialInsecure(d.IMAPAddr, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Login(user, d.Password(user)).Wait(); err != nil {
		t.Fatalf("LOGIN %s: %v", user, err)
	}
	return c
}

func uidValidity(t *testing.T, c *imapclient.Client, mailbox string) uint32 {
	t.Helper()
	st, err := c.Status(mailbox, &imap.StatusOptions{UIDValidity: true}).Wait()
	if err != nil {
		t.Fatalf("STATUS %s: %v", mailbox, err)
	}
	return st.UIDValidity
}

// expect checks that exactly the given requests arrived since the last
// call, each accepted, with the secret, as JSON, carrying these hints.
func expect(t *testing.T, s *sink, what string, want ...[]event.Hint) {
	t.Helper()
	got := s.take()
	if len(got) != len(want) {
		t.Errorf("%s: %d POSTs, want %d: %+v", what, len(got), len(want), got)
		return
	}
	for i, p := range got {
		if p.Status != 204 || p.Auth != "Bearer "+testSecret || p.ContentType != "application/json" {
			t.Errorf("%s: POST %d: answered %d, Authorization %q, Content-Type %q", what, i, p.Status, p.Auth, p.ContentType)
		}
		if !reflect.DeepEqual(p.Hints, want[i]) {
			t.Errorf("%s: POST %d %s\ngave hints %+v\nwant       %+v", what, i, p.Body, p.Hints, want[i])
		}
	}
}

func TestDeliveryPostsOnce(t *testing.T) {
	t.Parallel()
	s := newSink(t)
	d := startHooked(t, s.URL)
	d.Deliver(t, "alice@example.com", []byte(testMsg))
	first := s.take()
	d.Deliver(t, "alice@example.com", []byte(testMsg))
	second := s.take()

	c := imapLogin(t, d, "alice")
	uv := uidValidity(t, c, "INBOX")
	expect(t, s, "LOGIN, STATUS")
	for i, got := range [][]posted{first, second} {
		want := []event.Hint{{User: "alice", Mailbox: "INBOX", What: event.Arrived, UIDValidity: uv, UIDNext: uint32(i + 2)}}
		if len(got) != 1 || !reflect.DeepEqual(got[0].Hints, want) || got[0].Status != 204 ||
			got[0].Auth != "Bearer "+testSecret || got[0].ContentType != "application/json" {
			t.Errorf("delivery %d: %+v, want one POST with %+v", i+1, got, want)
		}
	}
	if st := s.Handler.Stats(); st != (dovecot.Stats{Accepted: 2, Hints: 2}) {
		t.Errorf("stats %+v, want 2 accepted, 2 hints", st)
	}
}

func TestDeliveryToTwoRecipients(t *testing.T) {
	t.Parallel()
	s := newSink(t)
	d := startHooked(t, s.URL)
	l := dialLMTP(t, d.LMTPAddr)
	l.deliver(t, testMsg, "alice@example.com", "bob@example.com")
	got := s.take()

	uvAlice := uidValidity(t, imapLogin(t, d, "alice"), "INBOX")
	uvBob := uidValidity(t, imapLogin(t, d, "bob"), "INBOX")
	want := [][]event.Hint{
		{{User: "alice", Mailbox: "INBOX", What: event.Arrived, UIDValidity: uvAlice, UIDNext: 2}},
		{{User: "bob", Mailbox: "INBOX", What: event.Arrived, UIDValidity: uvBob, UIDNext: 2}},
	}
	if len(got) != 2 {
		t.Fatalf("%d POSTs, want one per recipient: %+v", len(got), got)
	}
	if got[0].Hints[0].User == "bob" {
		got[0], got[1] = got[1], got[0]
	}
	for i := range got {
		if !reflect.DeepEqual(got[i].Hints, want[i]) {
			t.Errorf("POST %s gave %+v, want %+v", got[i].Body, got[i].Hints, want[i])
		}
	}
}

func TestIMAPChanges(t *testing.T) {
	t.Parallel()
	s := newSink(t)
	d := startHooked(t, s.URL)
	for range 3 {
		d.Deliver(t, "alice@example.com", []byte(testMsg))
	}
	s.take()
	c := imapLogin(t, d, "alice")
	if err := c.Create("Notes", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	inbox, notes := uidValidity(t, c, "INBOX"), uidValidity(t, c, "Notes")
	expect(t, s, "LOGIN, CREATE, STATUS")
	hint := func(mailbox string, what event.What, uv, uidNext uint32) []event.Hint {
		return []event.Hint{{User: "alice", Mailbox: mailbox, What: what, UIDValidity: uv, UIDNext: uidNext}}
	}

	app := c.Append("Notes", int64(len(testMsg)), nil)
	if _, err := app.Write([]byte(testMsg)); err != nil {
		t.Fatal(err)
	}
	if err := app.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := app.Wait(); err != nil {
		t.Fatalf("APPEND: %v", err)
	}
	expect(t, s, "APPEND", hint("Notes", event.Arrived, notes, 2))

	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	// Selecting takes \Recent away, which Dovecot reports as a FlagsClear
	// of nothing: no POST.
	expect(t, s, "SELECT")

	store := func(op imap.StoreFlagsOp, flags ...imap.Flag) {
		t.Helper()
		if err := c.Store(imap.SeqSetNum(1, 2, 3), &imap.StoreFlags{Op: op, Silent: true, Flags: flags}, nil).Close(); err != nil {
			t.Fatalf("STORE: %v", err)
		}
	}
	store(imap.StoreFlagsAdd, imap.FlagSeen, "$Work")
	expect(t, s, "STORE 1:3 +FLAGS", hint("INBOX", event.Flags, inbox, 0))
	store(imap.StoreFlagsDel, "$Work")
	expect(t, s, "STORE 1:3 -FLAGS", hint("INBOX", event.Flags, inbox, 0))

	if err := c.Store(imap.SeqSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	expect(t, s, "STORE 1 +FLAGS \\Deleted", hint("INBOX", event.Flags, inbox, 0))
	if err := c.Expunge().Close(); err != nil {
		t.Fatal(err)
	}
	expect(t, s, "EXPUNGE", hint("INBOX", event.Expunged, inbox, 0))

	if _, err := c.Copy(imap.SeqSetNum(1), "Notes").Wait(); err != nil {
		t.Fatal(err)
	}
	expect(t, s, "COPY", hint("Notes", event.Arrived, notes, 3))
	if _, err := c.Move(imap.SeqSetNum(1), "Notes").Wait(); err != nil {
		t.Fatal(err)
	}
	// Two mailbox transactions: the copy into Notes, then the expunge.
	expect(t, s, "MOVE", hint("Notes", event.Arrived, notes, 4), hint("INBOX", event.Expunged, inbox, 0))

	if err := c.Rename("Notes", "Archive", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	expect(t, s, "RENAME", []event.Hint{
		{User: "alice", Mailbox: "Notes", What: event.Gone},
		{User: "alice", Mailbox: "Archive", What: event.Unknown},
	})
	if err := c.Delete("Archive").Wait(); err != nil {
		t.Fatal(err)
	}
	// Dovecot expunges the messages in a transaction of their own first.
	expect(t, s, "DELETE", hint("Archive", event.Expunged, notes, 0), hint("Archive", event.Gone, 0, 0))

	if err := c.Noop().Wait(); err != nil {
		t.Fatal(err)
	}
	if err := c.Logout().Wait(); err != nil {
		t.Fatal(err)
	}
	expect(t, s, "NOOP, LOGOUT")
}

// Mailbox names are UTF-8 in Dovecot's events and may hold any character
// IMAP allows; the script must encode each as JSON.
func TestMailboxNameEncoding(t *testing.T) {
	t.Parallel()
	s := newSink(t)
	d := startHooked(t, s.URL)
	c := imapLogin(t, d, "alice")
	const name = `Qu"ote\back é✓ 日本`
	if err := c.Create(name, nil).Wait(); err != nil {
		t.Fatal(err)
	}
	uv := uidValidity(t, c, name)
	app := c.Append(name, int64(len(testMsg)), nil)
	app.Write([]byte(testMsg))
	app.Close()
	if _, err := app.Wait(); err != nil {
		t.Fatalf("APPEND: %v", err)
	}
	got := s.take()
	want := []event.Hint{{User: "alice", Mailbox: name, What: event.Arrived, UIDValidity: uv, UIDNext: 2}}
	if len(got) != 1 || !reflect.DeepEqual(got[0].Hints, want) {
		t.Fatalf("got %+v, want one POST with %+v", got, want)
	}
	if !strings.Contains(got[0].Body, `"mailbox":"Qu\"ote\\back é✓ 日本"`) {
		t.Errorf("body %s: want the name escaped, its UTF-8 as is", got[0].Body)
	}
}

// A wrong secret is refused; Dovecot logs why, without the secret, and the
// delivery goes on.
func TestWrongSecret(t *testing.T) {
	t.Parallel()
	s := newSink(t)
	const wrong = "not-the-right-secret-at-all"
	d := startWith(t, hookConfig(t, s.URL, "xapsproxy_secret = "+wrong))
	d.Deliver(t, "alice@example.com", []byte(testMsg))
	if got := s.take(); len(got) != 1 || got[0].Status != 401 || got[0].Hints != nil {
		t.Errorf("got %+v, want one POST answered 401", got)
	}
	if st := s.Handler.Stats(); st.Unauthorized != 1 || st.Accepted != 0 {
		t.Errorf("stats %+v", st)
	}
	// The warning reaches the log through Dovecot's log process, maybe
	// after the delivery is answered.
	refused := "lua: xapsproxy: POST " + s.URL + " refused (401)"
	log := d.Log()
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(log, refused) && time.Now().Before(deadline); log = d.Log() {
		time.Sleep(20 * time.Millisecond) // polling the log
	}
	if !strings.Contains(log, refused) {
		t.Errorf("no warning about the refusal in Dovecot's log:\n%s", log)
	}
	if strings.Contains(log, wrong) {
		t.Errorf("Dovecot's log has the secret:\n%s", log)
	}
}

// "xapsproxy_secret = <file" reads the file, newline and all: the script
// trims it (a newline in a header would make Dovecot's HTTP client panic).
func TestSecretFromFile(t *testing.T) {
	t.Parallel()
	s := newSink(t)
	f, err := os.CreateTemp("", "xapsproxy-secret")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(f.Name()) })
	f.WriteString(testSecret + "\n")
	f.Close()
	os.Chmod(f.Name(), 0o644) // Dovecot's config is read as Dovecot's user here
	d := startWith(t, hookConfig(t, s.URL, "xapsproxy_secret = <"+f.Name()))
	d.Deliver(t, "alice@example.com", []byte(testMsg))
	if got := s.take(); len(got) != 1 || got[0].Status != 204 {
		t.Errorf("got %+v, want one POST answered 204", got)
	}
}

// downURL is the URL of a port nothing listens on.
func downURL(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "http://" + addr + "/dovecot/events"
}

// blackHole accepts connections and never answers; it returns the URL.
func blackHole(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	// Accepts until the listener closes; reads and drops what comes in.
	go func() {
		defer close(done)
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
			go func() { // ends when the connection is closed
				buf := make([]byte, 4096)
				for {
					if _, err := c.Read(buf); err != nil {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return "http://" + ln.Addr().String() + "/dovecot/events"
}

// With the proxy down (nothing listening) or hung (a black hole), mail is
// still delivered, within the script's one-second timeout, and Dovecot logs
// a warning without the secret.
func TestProxyUnreachable(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name  string
		url   func(testing.TB) string
		max   time.Duration
		log   string
		count int
	}{
		{"down", downURL, 500 * time.Millisecond, "Connection refused", 5},
		{"black hole", blackHole, 2500 * time.Millisecond, "Absolute request timeout expired", 3},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			url := tt.url(t)
			d := startHooked(t, url)
			l := dialLMTP(t, d.LMTPAddr)
			var took []time.Duration
			for range tt.count {
				took = append(took, l.deliver(t, testMsg, "alice@example.com"))
			}
			t.Logf("deliveries took %v", took)
			for _, line := range strings.Split(d.Log(), "\n") {
				if strings.Contains(line, "xapsproxy: POST") {
					t.Log(line)
					break
				}
			}
			for _, el := range took {
				if el > tt.max {
					t.Errorf("a delivery took %v, want at most %v", el, tt.max)
				}
			}
			c := imapLogin(t, d, "alice")
			sel, err := c.Select("INBOX", nil).Wait()
			if err != nil || sel.NumMessages != uint32(tt.count) {
				t.Fatalf("INBOX after %d deliveries: %+v, %v", tt.count, sel, err)
			}
			// An IMAP command that changes something waits the same way.
			start := time.Now()
			if err := c.Store(imap.SeqSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagSeen}}, nil).Close(); err != nil {
				t.Fatalf("STORE: %v", err)
			}
			el := time.Since(start)
			t.Logf("STORE took %v", el)
			if el > tt.max {
				t.Errorf("STORE took %v, want at most %v", el, tt.max)
			}
			// The imap process's warning reaches the log through Dovecot's
			// log process, maybe after the STORE is answered.
			failed := "lua: xapsproxy: POST " + url + " failed: "
			log := d.Log()
			for deadline := time.Now().Add(5 * time.Second); strings.Count(log, failed) < tt.count+1 && time.Now().Before(deadline); log = d.Log() {
				time.Sleep(20 * time.Millisecond)
			}
			if n := strings.Count(log, failed); n != tt.count+1 {
				t.Errorf("%d warnings about the failed POST, want %d:\n%s", n, tt.count+1, log)
			}
			if !strings.Contains(log, tt.log) {
				t.Errorf("Dovecot's log does not say %q:\n%s", tt.log, log)
			}
			if strings.Contains(log, testSecret) {
				t.Errorf("Dovecot's log has the secret:\n%s", log)
			}
		})
	}
}

// The snippet adds to what a site's earlier protocol blocks load, and a
// plugin named twice (notify, here) is loaded once.
func TestSnippetKeepsOtherPlugins(t *testing.T) {
	t.Parallel()
	s := newSink(t)
	earlier := "mail_plugins = notify\nprotocol lmtp {\n  mail_plugins = $mail_plugins quota\n}\n"
	d := startWith(t, earlier+hookConfig(t, s.URL, "xapsproxy_secret = "+testSecret))
	out, err := exec.Command("doveconf", "-c", filepath.Join(d.Dir, "dovecot.conf"), "-f", "protocol=lmtp", "-h", "mail_plugins").CombinedOutput()
	if got, want := strings.TrimSpace(string(out)), "notify quota mail_lua notify push_notification push_notification_lua"; err != nil || got != want {
		t.Errorf("lmtp's mail_plugins: %q, %v; want %q", got, err, want)
	}
	d.Deliver(t, "alice@example.com", []byte(testMsg))
	if got := s.take(); len(got) != 1 || got[0].Status != 204 {
		t.Errorf("got %+v, want one POST answered 204", got)
	}
	if log := d.Log(); strings.Contains(log, "Error") || strings.Contains(log, "Warning") {
		t.Errorf("Dovecot's log:\n%s", log)
	}
}

// encodingHarness runs the real script in Dovecot's Lua and, on each
// delivery, adds an event for a mailbox name with every ASCII character
// from 0x01 up and some UTF-8: Dovecot lets no client create such a name,
// but one may exist on disk.
const encodingHarness = `
dofile("%s/xapsproxy.lua")
local message_new = dovecot_lua_notify_event_message_new
function dovecot_lua_notify_event_message_new(ctx, event)
	message_new(ctx, event)
	local name = ""
	for i = 1, 127 do
		name = name .. string.char(i)
	end
	message_new(ctx, { mailbox = name .. "é✓日本\u{10348}", uid = 7, uid_validity = 9 })
end
`

func TestJSONEncodingEveryCharacter(t *testing.T) {
	t.Parallel()
	s := newSink(t)
	d := startWith(t, hookConfigScript(t, "harness.lua", s.URL, "xapsproxy_secret = "+testSecret))
	if err := os.WriteFile(filepath.Join(d.Dir, "harness.lua"), []byte(fmt.Sprintf(encodingHarness, d.Dir)), 0o644); err != nil {
		t.Fatal(err)
	}
	d.Deliver(t, "alice@example.com", []byte(testMsg))
	var name strings.Builder
	for c := 1; c <= 127; c++ {
		name.WriteByte(byte(c))
	}
	name.WriteString("é✓日本\U00010348")
	got := s.take()
	if len(got) == 1 {
		t.Log(got[0].Body)
	}
	if len(got) != 1 || len(got[0].Hints) != 2 {
		t.Fatalf("got %+v, want one POST with two hints", got)
	}
	if want := (event.Hint{User: "alice", Mailbox: name.String(), What: event.Arrived, UIDValidity: 9, UIDNext: 8}); got[0].Hints[1] != want {
		t.Errorf("body %s\ngave %#v\nwant %#v", got[0].Body, got[0].Hints[1], want)
	}
}
