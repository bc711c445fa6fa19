package main

// xapsproxy killed with SIGKILL between storing the mailbox state of new
// mail and APNs answering its push (APNs unreachable, or holding the
// request unanswered): the restarted binary sends the push left in the
// outbox, and APNs answers exactly one push per mail. The control shows what the outbox saves: with
// it emptied while the proxy is down, the restarted proxy finds the state
// already stored and the mail is never pushed.

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/xapsproxy/xapsproxy/internal/apnstest"
	"github.com/xapsproxy/xapsproxy/internal/dovecottest"
	"github.com/xapsproxy/xapsproxy/store"
)

// inboxLine registers alice's INBOX only, as iPhone Mail does for an
// account whose other folders are not pushed.
const inboxLine = "a2 XAPPLEPUSHSERVICE aps-version 2 aps-account-id " + v2Account + " aps-device-token " + v2Token + " aps-subtopic com.apple.mobilemail mailboxes (INBOX)"

// Log lines of the binary the test waits for.
const (
	pushFailedLine  = "push failed; will retry"
	outboxResentMsg = "sending the pushes left in the outbox"
)

func TestOutboxSurvivesKill(t *testing.T) {
	t.Parallel()
	t.Run("outbox kept", func(t *testing.T) {
		t.Parallel()
		testOutboxKill(t, false, false)
	})
	// The push reached APNs, which had not answered when the proxy died.
	t.Run("push unanswered", func(t *testing.T) {
		t.Parallel()
		testOutboxKill(t, false, true)
	})
	// The control: the same crash with the outbox emptied while the proxy
	// is down, as before the outbox existed.
	t.Run("outbox emptied", func(t *testing.T) {
		t.Parallel()
		testOutboxKill(t, true, false)
	})
}

// testOutboxKill kills the proxy while the push of new mail is owed: with
// held, APNs has the request and holds its answer; else nothing listens at
// the APNs endpoint.
func testOutboxKill(t *testing.T, emptyOutbox, held bool) {
	s := newStackWith(t, dovecottest.Options{}, "")
	doc, err := os.ReadFile(s.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	fakeEndpoint := fmt.Sprintf("endpoint = %q", s.apns.URL)
	if !strings.Contains(string(doc), fakeEndpoint) {
		t.Fatalf("configuration has no line %s:\n%s", fakeEndpoint, doc)
	}
	writeConfig := func(endpoint string) {
		t.Helper()
		data := strings.Replace(string(doc), fakeEndpoint, fmt.Sprintf("endpoint = %q", endpoint), 1)
		if err := os.WriteFile(s.cfgPath, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if held {
		s.apns.Hold()
	} else {
		// Nothing listens there: every push fails with "connection refused".
		writeConfig("https://" + freeAddr(t))
	}

	first := startServe(t, s.cfgPath)
	var second *serveProc
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log of the proxy killed:\n%s", first.log())
			if second != nil {
				t.Logf("log of the proxy restarted:\n%s", second.log())
			}
		}
	})
	d := dialProxy(t, s, first)
	d.loginAndRegisterInbox()
	waitServeWatching(t, first)

	st, err := store.Open(t.Context(), s.cfg.Store.Path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ctx := context.Background()
	baseline, err := st.MailboxState(ctx, "alice", "INBOX")
	if err != nil {
		t.Fatalf("INBOX baseline after the registration: %v", err)
	}

	s.deliver("before the crash")
	wantNext := baseline.UIDNext + 1
	var pending []store.OutboxEntry
	waitUntil(t, "the new INBOX state and its outbox entry to be stored", func() bool {
		ms, err := st.MailboxState(ctx, "alice", "INBOX")
		if err != nil || ms.UIDNext != wantNext {
			return false
		}
		pending, err = st.Outbox(ctx)
		return err == nil && len(pending) > 0
	})
	if held {
		s.apns.WaitRequests(t, 1, waitTimeout) // APNs has it and does not answer
	} else {
		waitUntil(t, "a failed push attempt in the log", func() bool {
			return strings.Contains(first.log(), pushFailedLine)
		})
	}
	first.kill()
	if held {
		s.apns.WaitAbandoned(t, 1, waitTimeout) // the connection died with the proxy
		s.apns.Release()
	}

	pending, err = st.Outbox(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(pending) != 1 || pending[0].User != "alice" || pending[0].Mailbox != "INBOX" || pending[0].Changed {
		t.Fatalf("outbox after the kill: %+v; want alice's INBOX new-mail entry", pending)
	}
	if ms, err := st.MailboxState(ctx, "alice", "INBOX"); err != nil || ms.UIDNext != wantNext {
		t.Fatalf("INBOX state after the kill: %+v, %v; want UIDNEXT %d", ms, err, wantNext)
	}
	if n := s.apns.Answered(); n != 0 {
		t.Fatalf("the fake APNs answered %d pushes before the restart", n)
	}
	sentBefore := len(s.apns.Requests()) // 1 when held, else 0
	if emptyOutbox {
		if err := st.FinishPushes(ctx, nil, pending[:1]); err != nil {
			t.Fatal(err)
		}
		if left, err := st.Outbox(ctx); err != nil || len(left) != 0 {
			t.Fatalf("outbox not emptied: %+v, %v", left, err)
		}
	}

	// APNs answers from now on.
	writeConfig(s.apns.URL)
	second = startServe(t, s.cfgPath)
	if !emptyOutbox {
		r := s.apns.WaitRequests(t, sentBefore+1, waitTimeout)[sentBefore]
		checkInboxPush(t, r)
		// Written before the push was sent; the pipe may lag behind.
		resent := regexp.MustCompile(`msg="` + outboxResentMsg + `" (?:.* )?entries=1 `)
		waitUntil(t, "the restarted proxy to log that it sent the outbox's one entry", func() bool {
			return resent.MatchString(second.log())
		})
	}
	waitOutboxEmpty(t, st)

	// The second mail's push shows the proxy has moved on: nothing else
	// is owed for the first one.
	waitServeWatching(t, second)
	delivered := time.Now()
	s.deliver("after the restart")
	want := 2
	if emptyOutbox {
		want = 1 // the first mail is lost: its state was stored, its push not
	}
	reqs := s.apns.WaitRequests(t, sentBefore+want, waitTimeout)
	last := reqs[sentBefore+want-1]
	checkInboxPush(t, last)
	if last.Received.Before(delivered) {
		t.Errorf("push %d came %v before the second mail was delivered: a push too many for the first mail",
			want, delivered.Sub(last.Received))
	}
	waitOutboxEmpty(t, st)
	if got := len(s.apns.Requests()); got != sentBefore+want {
		t.Errorf("%d pushes in all, want %d", got, sentBefore+want)
	}
	if got := s.apns.Answered(); got != want {
		t.Errorf("APNs answered %d pushes, want %d: one per mail", got, want)
	}
	if emptyOutbox && strings.Contains(second.log(), outboxResentMsg) {
		t.Errorf("the restarted proxy logs %q with an empty outbox", outboxResentMsg)
	}
}

// checkInboxPush checks that r is alice's push about her INBOX.
func checkInboxPush(t *testing.T, r apnstest.Request) {
	t.Helper()
	if r.Token != v2Token || r.AccountID != v2Account || r.Topic != topic || r.PushType != "background" {
		t.Errorf("push: token %s account %s topic %s type %s", r.Token, r.AccountID, r.Topic, r.PushType)
	}
	if want := []string{apnstest.MailboxHash("INBOX")}; !slices.Equal(r.Mailboxes, want) {
		t.Errorf("push names mailboxes %v, want %v (INBOX)", r.Mailboxes, want)
	}
}

func waitOutboxEmpty(t *testing.T, st store.Store) {
	t.Helper()
	var left []store.OutboxEntry
	var err error
	deadline := time.Now().Add(waitTimeout)
	for {
		if left, err = st.Outbox(context.Background()); err == nil && len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("outbox still holds %+v (%v) after %v", left, err, waitTimeout)
		}
		time.Sleep(10 * time.Millisecond) // polling the store, not synchronisation
	}
}

// serveAddr waits for the log line of p with message msg and returns the
// value of its key.
func serveAddr(t *testing.T, p *serveProc, msg, key string) string {
	t.Helper()
	text := msg // as slog's text handler writes it
	if strings.Contains(msg, " ") {
		text = strconv.Quote(msg)
	}
	re := regexp.MustCompile(`msg=` + regexp.QuoteMeta(text) + ` (?:.* )?` + key + `=(\S+)`)
	var addr string
	waitUntil(t, "the log line "+msg+" "+key+"=", func() bool {
		m := re.FindStringSubmatch(p.log())
		if m != nil {
			addr = m[1]
		}
		return m != nil
	})
	return addr
}

// dialProxy connects a device to the TLS listener of p.
func dialProxy(t *testing.T, s *stack, p *serveProc) *device {
	t.Helper()
	addr := serveAddr(t, p, "listening", "tls")
	c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: s.ca.Pool(), ServerName: "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	d := &device{t: t, conn: c, r: bufio.NewReader(c)}
	if g := d.line(); !strings.HasPrefix(g, "* OK ") {
		t.Fatalf("greeting %q", g)
	}
	return d
}

// loginAndRegisterInbox logs in as alice and registers inboxLine.
func (d *device) loginAndRegisterInbox() {
	d.t.Helper()
	if r := d.command("a1 LOGIN alice alicepw"); !strings.HasPrefix(r[len(r)-1], "a1 OK ") {
		d.t.Fatalf("LOGIN: %q", r)
	}
	want := []string{
		`* XAPPLEPUSHSERVICE "mailbox" "INBOX"`,
		`* XAPPLEPUSHSERVICE aps-version "2" aps-topic "` + topic + `"`,
		`a2 OK XAPPLEPUSHSERVICE completed.`,
	}
	if r := d.command(inboxLine); !slices.Equal(r, want) {
		d.t.Fatalf("XAPPLEPUSHSERVICE reply %q, want %q", r, want)
	}
}

// waitServeWatching waits until p's /metrics shows one watcher watching.
func waitServeWatching(t *testing.T, p *serveProc) {
	t.Helper()
	url := "http://" + serveAddr(t, p, "admin listening", "addr") + "/metrics"
	const want = `xapsproxy_watchers{state="watching"} 1` + "\n"
	waitUntil(t, "one watcher watching in /metrics", func() bool {
		res, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		body, _ := io.ReadAll(res.Body)
		return strings.Contains(string(body), want)
	})
}
