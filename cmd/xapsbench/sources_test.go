package main

import (
	"context"
	"io"
	"net"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/xapsproxy/xapsproxy/internal/dovecotrun"
	"github.com/xapsproxy/xapsproxy/internal/imapnotify"
)

// The whole command, tiny: every source against Dovecot, each delivery
// pushed, the memory runs, and a verdict per goal.
func TestSourcesQuick(t *testing.T) {
	if !dovecotrun.Available() {
		if os.Getenv("XAPSPROXY_TEST_DOVECOT") == "required" {
			t.Fatal(dovecotrun.ErrNotInstalled)
		}
		t.Skip(dovecotrun.ErrNotInstalled)
	}
	if testing.Short() {
		t.Skip("builds xapsproxy and runs Dovecot")
	}
	var out, progress strings.Builder
	args := []string{"-quick", "-accounts", "6", "-deliveries", "2", "-hook-deliveries", "5", "-poll-interval", "1s",
		"-mem-notify", "20", "-mem-idle", "20", "-mem-events", "200"}
	if os.Geteuid() == 0 {
		args = append(args, "-dovecot-user", "nobody") // an account every system has
	}
	if err := sourcesCmd(context.Background(), args, &out, &progress); err != nil {
		t.Fatalf("%v\n%s\nprogress:\n%s", err, out.String(), progress.String())
	}
	report := out.String()
	for _, re := range []string{
		`(?m)^    INBOX( +-?\d+\.\d){4} +2/2$`,
		`(?m)^    Notes( +-?\d+\.\d){4} +2/2$`,
		`(?m)^  dovecot: no backend connection per account +met: +0 Dovecot IMAP sessions, 0 xapsproxy backend sessions`,
		`(?m)^  notify: Notes push p99 <= 1 s +(not )?met: `,
		`(?m)^  idle-hibernate: Notes push p99 <= 1 s +(not )?met: `,
		`(?m)^  dovecot +200 +0 `,
		`(?m)^  notify +20 +20 `,
		`(?m)^  idle +20 +20 `,
		`(?m)^  hook on( +\d+\.\d){4}$`,
		`(?m)^  the hook adds <= 2 ms p50 to a delivery +(not )?met: `,
	} {
		if !regexp.MustCompile(re).MatchString(report) {
			t.Errorf("the report has no line matching %s:\n%s", re, report)
		}
	}
	pushed := regexp.MustCompile(`(?m)^    (INBOX|Notes)( +-?\d+\.\d){4} +2/2$`)
	if n := len(pushed.FindAllString(report, -1)); n != 8 {
		t.Errorf("%d rows with 2/2 pushed, want INBOX and Notes of each of 4 sources:\n%s", n, report)
	}
}

func TestSourcesSettings(t *testing.T) {
	s, err := parseSourcesSettings([]string{"-quick", "-sources", "notify,dovecot"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if s.accounts != 10 || s.deliveries != 3 || !slices.Equal(s.sources, []string{"notify", "dovecot"}) || s.memEvents != 1000 {
		t.Errorf("quick settings %+v", s)
	}
	for _, bad := range [][]string{
		{"-sources", "imap"},
		{"-accounts", "10", "-deliveries", "6"}, // 12 deliveries, 10 accounts
		{"-poll-interval", "500ms"},
		{"-inotify-instances", "-1"},
	} {
		if _, err := parseSourcesSettings(bad, io.Discard); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
	if s, err := parseSourcesSettings([]string{"-no-memory"}, io.Discard); err != nil || s.memNotify+s.memIdle+s.memEvents != 0 {
		t.Errorf("-no-memory: %+v, %v", s, err)
	}
	if s, err := parseSourcesSettings([]string{"-quick", "-mem-idle", "0", "-sources", "none"}, io.Discard); err != nil ||
		s.memIdle != 0 || s.memNotify != 100 || len(s.sources) != 0 {
		t.Errorf("-quick -mem-idle 0 -sources none: %+v, %v", s, err)
	}
}

// The fake IMAP server answers xapsproxy's NOTIFY client as a server with
// empty mailboxes would, and then stays silent.
func TestFakeIMAP(t *testing.T) {
	f, err := startFakeIMAP()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	conn, err := net.Dial("tcp", f.addr())
	if err != nil {
		t.Fatal(err)
	}
	c := imapnotify.New(conn, imapnotify.Options{User: "user0001"})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Greeting(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Login(ctx, "user0001*master", "any"); err != nil {
		t.Fatal(err)
	}
	st, err := c.Notify(ctx, []string{"INBOX", "Notes"})
	if err != nil {
		t.Fatal(err)
	}
	if len(st) != 2 || st[0].UIDNext != 1 || st[1].UIDValidity != 1 {
		t.Errorf("NOTIFY statuses %+v, want INBOX and Notes with UIDVALIDITY 1, UIDNEXT 1", st)
	}
	if v, next, err := c.Status(ctx, "Notes"); err != nil || v != 1 || next != 1 {
		t.Errorf("STATUS Notes = %d, %d, %v", v, next, err)
	}
	if f.conns.Load() != 1 {
		t.Errorf("%d open connections, want 1", f.conns.Load())
	}
	short, stop := context.WithTimeout(ctx, 200*time.Millisecond)
	defer stop()
	if h, err := c.Next(short); err == nil {
		t.Errorf("Next: hint %+v from a server that stays silent", h)
	}
}

func TestFakeIMAPArguments(t *testing.T) {
	got := notifyMailboxes(`SET STATUS (mailboxes (INBOX "Notes") (MessageNew MessageExpunge)) (personal (MailboxName))`)
	if !slices.Equal(got, []string{"INBOX", `"Notes"`}) {
		t.Errorf("notifyMailboxes = %q", got)
	}
	if got := notifyMailboxes("NONE"); got != nil {
		t.Errorf("notifyMailboxes(NONE) = %q", got)
	}
	if mb, rest := cutMailbox(`"My Notes" (UIDNEXT)`); mb != `"My Notes"` || rest != "(UIDNEXT)" {
		t.Errorf("cutMailbox quoted = %q, %q", mb, rest)
	}
	if mb, rest := cutMailbox(`INBOX (UIDNEXT UIDVALIDITY)`); mb != "INBOX" || rest != "(UIDNEXT UIDVALIDITY)" {
		t.Errorf("cutMailbox atom = %q, %q", mb, rest)
	}
}

func TestProcStat(t *testing.T) {
	comm, pgrp, ok := procStat(os.Getpid())
	if !ok || comm == "" || pgrp <= 0 {
		t.Fatalf("procStat(self) = %q, %d, %v", comm, pgrp, ok)
	}
	s := sampleGroup(pgrp)
	if s.procs < 1 || s.rss <= 0 || s.byName[comm] < 1 {
		t.Errorf("sampleGroup(own group) = %+v", s)
	}
	if got := (groupSample{byName: map[string]int{"imap": 3, "auth": 1, "anvil": 1}}).names(); got != "3 imap, 1 anvil, 1 auth" {
		t.Errorf("names = %q", got)
	}
}
