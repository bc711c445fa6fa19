package dovecottest_test

import (
	"bytes"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/xapsproxy/xapsproxy/internal/dovecottest"
)

const testMsg = "From: sender@example.com\r\n" +
	"To: alice@example.com\r\n" +
	"Subject: hello\r\n" +
	"Message-ID: <1@example.com>\r\n" +
	"\r\n" +
	"Hello Alice.\r\n" +
	".leading dot, dot-stuffed on the wire\r\n"

func dial(t *testing.T, addr string, opts *imapclient.Options) *imapclient.Client {
	t.Helper()
	c, err := imapclient.DialInsecure(addr, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func login(t *testing.T, addr, user, pw string, opts *imapclient.Options) *imapclient.Client {
	t.Helper()
	c := dial(t, addr, opts)
	if err := c.Login(user, pw).Wait(); err != nil {
		t.Fatalf("LOGIN %s: %v", user, err)
	}
	return c
}

// fetchAll returns BODY[] of every message in INBOX.
func fetchAll(t *testing.T, c *imapclient.Client) [][]byte {
	t.Helper()
	sel, err := c.Select("INBOX", nil).Wait()
	if err != nil {
		t.Fatal(err)
	}
	if sel.NumMessages == 0 {
		return nil
	}
	section := &imap.FetchItemBodySection{Peek: true}
	msgs, err := c.Fetch(imap.SeqSetNum(1, sel.NumMessages), &imap.FetchOptions{
		BodySection: []*imap.FetchItemBodySection{section},
	}).Collect()
	if err != nil {
		t.Fatal(err)
	}
	var bodies [][]byte
	for _, m := range msgs {
		bodies = append(bodies, m.FindBodySection(section))
	}
	return bodies
}

func TestLogin(t *testing.T) {
	t.Parallel()
	d := dovecottest.Start(t, dovecottest.Options{})
	login(t, d.IMAPAddr, "alice", d.Password("alice"), nil)
	login(t, d.IMAPAddr, "bob", "bobpw", nil)
	login(t, d.IMAPAddr, "alice"+"*"+d.MasterUser, d.MasterPassword, nil)

	c := dial(t, d.IMAPAddr, nil)
	start := time.Now()
	if err := c.Login("alice", "wrong").Wait(); err == nil {
		t.Fatal("LOGIN with a wrong password succeeded")
	}
	if el := time.Since(start); el > 450*time.Millisecond {
		t.Errorf("wrong password took %v, want a prompt failure", el)
	} else {
		t.Logf("wrong password rejected in %v", el)
	}

	start = time.Now()
	if err := c.Login("alice*master", "wrong").Wait(); err == nil {
		t.Fatal("master LOGIN with a wrong password succeeded")
	}
	t.Logf("wrong master password rejected in %v", time.Since(start))
}

func TestDeliverFetch(t *testing.T) {
	t.Parallel()
	d := dovecottest.Start(t, dovecottest.Options{})
	d.Deliver(t, "alice@example.com", []byte(testMsg))

	c := login(t, d.IMAPAddr, "alice", "alicepw", nil)
	bodies := fetchAll(t, c)
	if len(bodies) != 1 {
		t.Fatalf("INBOX has %d messages, want 1", len(bodies))
	}
	// Dovecot prepends trace fields, like any final delivery; the rest must
	// be exactly what was delivered.
	const trace = "Return-Path: <sender@example.com>\r\nDelivered-To: alice@example.com\r\nReceived: "
	if !bytes.HasPrefix(bodies[0], []byte(trace)) || !bytes.Equal(dovecottest.StripTrace(bodies[0]), []byte(testMsg)) {
		t.Errorf("BODY[] = %q, want trace fields + %q", bodies[0], testMsg)
	}
	// Bare LF line endings arrive as CRLF.
	d.Deliver(t, "bob@example.com", []byte(strings.ReplaceAll(testMsg, "\r\n", "\n")))
	got := fetchAll(t, login(t, d.IMAPAddr, "bob", "bobpw", nil))
	if len(got) != 1 || !bytes.Equal(dovecottest.StripTrace(got[0]), []byte(testMsg)) {
		t.Errorf("bob's INBOX = %q, want the CRLF message", got)
	}
	if !strings.Contains(d.Log(), "lmtp(alice)") {
		t.Errorf("log does not mention the delivery:\n%s", d.Log())
	}
}

func TestIdleSeesDelivery(t *testing.T) {
	for _, hibernate := range []bool{false, true} {
		name := map[bool]string{false: "plain", true: "hibernate"}[hibernate]
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			d := dovecottest.Start(t, dovecottest.Options{Hibernate: hibernate})
			var exists atomic.Uint32
			c := login(t, d.IMAPAddr, "alice", "alicepw", &imapclient.Options{
				UnilateralDataHandler: &imapclient.UnilateralDataHandler{
					Mailbox: func(m *imapclient.UnilateralDataMailbox) {
						if m.NumMessages != nil {
							exists.Store(*m.NumMessages)
						}
					},
				},
			})
			if _, err := c.Select("INBOX", nil).Wait(); err != nil {
				t.Fatal(err)
			}
			idle, err := c.Idle()
			if err != nil {
				t.Fatal(err)
			}
			if hibernate {
				start := time.Now()
				waitFor(t, 10*time.Second, "connection hibernated", func() bool { return hibernated(t, d) })
				t.Logf("IDLE -> hibernated: %v", time.Since(start))
			}
			start := time.Now()
			d.Deliver(t, "alice@example.com", []byte(testMsg))
			waitFor(t, 10*time.Second, "* 1 EXISTS", func() bool { return exists.Load() == 1 })
			t.Logf("delivery -> * 1 EXISTS: %v", time.Since(start))
			if err := idle.Close(); err != nil {
				t.Fatal(err)
			}
			if err := idle.Wait(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestRestartKeepsMail(t *testing.T) {
	t.Parallel()
	d := dovecottest.Start(t, dovecottest.Options{})
	d.Deliver(t, "alice@example.com", []byte(testMsg))
	d.Doveadm(t, "mailbox", "create", "-u", "alice", "Notes")
	imapAddr := d.IMAPAddr

	start := time.Now()
	d.Stop(t)
	t.Logf("Stop took %v", time.Since(start))
	if _, err := imapclient.DialInsecure(d.IMAPAddr, nil); err == nil {
		t.Error("IMAP port still accepts connections after Stop")
	}
	start = time.Now()
	d.Restart(t)
	t.Logf("Restart took %v", time.Since(start))
	if d.IMAPAddr != imapAddr {
		t.Errorf("IMAPAddr changed from %s to %s", imapAddr, d.IMAPAddr)
	}

	c := login(t, d.IMAPAddr, "alice", "alicepw", nil)
	if bodies := fetchAll(t, c); len(bodies) != 1 || !bytes.Equal(dovecottest.StripTrace(bodies[0]), []byte(testMsg)) {
		t.Errorf("after restart INBOX = %q, want the one delivered message", bodies)
	}
	if out := d.Doveadm(t, "mailbox", "list", "-u", "alice"); !strings.Contains(out, "Notes") {
		t.Errorf("mailbox list after restart = %q, want Notes", out)
	}
	d.Restart(t) // while running: stops first
	d.Deliver(t, "alice@example.com", []byte(testMsg))
}

// Kill ends Dovecot and its sessions at once; Restart brings it back.
func TestKillAndRestart(t *testing.T) {
	t.Parallel()
	d := dovecottest.Start(t, dovecottest.Options{})
	c := login(t, d.IMAPAddr, "alice", "alicepw", nil)
	d.Kill(t)
	if err := c.Noop().Wait(); err == nil {
		t.Error("a session survived Kill")
	}
	if _, err := imapclient.DialInsecure(d.IMAPAddr, nil); err == nil {
		t.Error("IMAP port still accepts connections after Kill")
	}
	d.Restart(t)
	login(t, d.IMAPAddr, "alice", "alicepw", nil)
}

func TestTwoInstances(t *testing.T) {
	t.Parallel()
	a := dovecottest.Start(t, dovecottest.Options{})
	b := dovecottest.Start(t, dovecottest.Options{})
	if a.IMAPAddr == b.IMAPAddr || a.LMTPAddr == b.LMTPAddr || a.Dir == b.Dir {
		t.Fatalf("instances share addresses or directory: %+v %+v", a, b)
	}
	a.Deliver(t, "alice@example.com", []byte(testMsg))
	if n := len(fetchAll(t, login(t, a.IMAPAddr, "alice", "alicepw", nil))); n != 1 {
		t.Errorf("first instance: %d messages, want 1", n)
	}
	if n := len(fetchAll(t, login(t, b.IMAPAddr, "alice", "alicepw", nil))); n != 0 {
		t.Errorf("second instance: %d messages, want 0", n)
	}
}

func TestCustomUsersAndExtraConfig(t *testing.T) {
	t.Parallel()
	d := dovecottest.Start(t, dovecottest.Options{
		Users:       map[string]string{"carol": "carolpw"},
		ExtraConfig: "login_trusted_networks = 127.0.0.0/8",
	})
	login(t, d.IMAPAddr, "carol", d.Password("carol"), nil)
	c := dial(t, d.IMAPAddr, nil)
	if err := c.Login("alice", "alicepw").Wait(); err == nil {
		t.Error("alice exists although Users replaces the defaults")
	}
	if out := d.Doveadm(t, "config", "-h", "login_trusted_networks"); strings.TrimSpace(out) != "127.0.0.0/8" {
		t.Errorf("login_trusted_networks = %q", out)
	}
}

// hibernated reports whether alice's session is held by imap-hibernate:
// `doveadm who` then lists the imap-hibernate process as its pid.
func hibernated(t *testing.T, d *dovecottest.Dovecot) bool {
	for _, line := range strings.Split(d.Doveadm(t, "process", "status"), "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[0] == "imap-hibernate" {
			return strings.Contains(d.Doveadm(t, "who", "alice"), "("+f[1]+")")
		}
	}
	return false
}

func TestStripTrace(t *testing.T) {
	for in, want := range map[string]string{
		"Return-Path: <a@b>\r\nReceived: from x\r\n\tby y\r\n (z)\r\nSubject: s\r\n\r\nbody\r\n": "Subject: s\r\n\r\nbody\r\n",
		"Subject: s\r\nReceived: x\r\n\r\n": "Subject: s\r\nReceived: x\r\n\r\n",
		"Delivered-To: a\r\n\r\nbody":       "\r\nbody",
		"":                                  "",
	} {
		if got := string(dovecottest.StripTrace([]byte(in))); got != want {
			t.Errorf("StripTrace(%q) = %q, want %q", in, got, want)
		}
	}
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// Without a master user only users' own passwords log in, and a password
// changed while Dovecot runs is the one the next login needs.
func TestNoMasterUserAndSetPassword(t *testing.T) {
	t.Parallel()
	d := dovecottest.Start(t, dovecottest.Options{NoMasterUser: true})
	if d.MasterUser != "" || d.MasterPassword != "" {
		t.Fatalf("master %q/%q", d.MasterUser, d.MasterPassword)
	}
	if err := dial(t, d.IMAPAddr, nil).Login("alice*master", "masterpw").Wait(); err == nil {
		t.Fatal("a master login worked")
	}
	login(t, d.IMAPAddr, "alice", "alicepw", nil)
	d.SetPassword(t, "alice", "new alice pw")
	if err := dial(t, d.IMAPAddr, nil).Login("alice", "alicepw").Wait(); err == nil {
		t.Fatal("the old password still works")
	}
	login(t, d.IMAPAddr, "alice", "new alice pw", nil)
	login(t, d.IMAPAddr, "bob", "bobpw", nil)
	if d.Password("alice") != "new alice pw" {
		t.Errorf("Password = %q", d.Password("alice"))
	}
}
