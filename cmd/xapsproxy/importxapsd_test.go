package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/xapsproxy/xapsproxy/config"
	"github.com/xapsproxy/xapsproxy/internal/xapsd"
	"github.com/xapsproxy/xapsproxy/store"
)

// A database as dovecot-xaps-daemon writes it (json.MarshalIndent of its
// Database: users, then account ids, sorted; the keys of each account in
// its struct's order): alice's iPhone registered INBOX and Notes, its
// token in upper case as some plugin versions passed it on; an older
// entry of alice's without a time, with a token no device has; bob's
// device, which registered with xapsproxy since; and an entry no daemon
// would have written (a master login name).
const (
	importedToken   = "C0FFEE00DEADBEEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF"
	importedAccount = "6B2E1F0C-7A4D-4E21-9C3B-5D8A1E0F2B7C"
	bobToken        = "b0b0000000000000000000000000000000000000000000000000000000000001"
	xapsdDatabase   = `{
  "Users": {
    "alice": {
      "Accounts": {
        "` + importedAccount + `": {
          "DeviceToken": "` + importedToken + `",
          "Mailboxes": [
            "INBOX",
            "Notes"
          ],
          "RegistrationTime": "2026-11-30T08:15:00.123456789Z"
        },
        "OLD-ACCOUNT": {
          "DeviceToken": "alicedevicetoken1",
          "Mailboxes": [
            "Inbox"
          ],
          "RegistrationTime": "0001-01-01T00:00:00Z"
        }
      }
    },
    "alice*master": {
      "Accounts": {
        "M-1": {
          "DeviceToken": "` + bobToken + `",
          "Mailboxes": null,
          "RegistrationTime": "2026-11-30T08:15:00Z"
        }
      }
    },
    "bob": {
      "Accounts": {
        "BOB-OLD": {
          "DeviceToken": "` + bobToken + `",
          "Mailboxes": [
            "INBOX"
          ],
          "RegistrationTime": "2026-11-01T10:00:00Z"
        }
      }
    }
  }
}`
)

func runImport(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errs bytes.Buffer
	err := run(t.Context(), append([]string{"import-xapsd"}, args...), &out, &errs)
	code = exitStatus(err, &out, &errs)
	return out.String(), errs.String(), code
}

// The phone keeps push across the switch: registered with the old daemon,
// imported, it gets xapsproxy's push for new mail with the token and
// account id it gave the daemon, without registering again.
func TestImportXapsdThenPush(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	dbFile := filepath.Join(t.TempDir(), "database.json")
	if err := os.WriteFile(dbFile, []byte(xapsdDatabase), 0o600); err != nil {
		t.Fatal(err)
	}
	s.start()
	// bob's phone has registered with xapsproxy since the daemon's record.
	bobRenewed := time.Now().Truncate(time.Second)
	if err := s.app.store.Register(t.Context(), store.Registration{User: "bob", DeviceToken: bobToken, AccountID: "BOB-NEW",
		Mailboxes: []string{"INBOX"}, Version: 2, Topic: topic, Renewed: bobRenewed}); err != nil {
		t.Fatal(err)
	}

	// While serve runs: a dry run reports, an import refuses.
	out, errs, code := runImport(t, "-config", s.cfgPath, "-dry-run", dbFile)
	if code != 0 || !strings.Contains(out, dbFile+": 1 to import, 1 already newer, 0 beyond the device limit, 2 invalid\n") {
		t.Fatalf("dry run: exit %d\n%s%s", code, out, errs)
	}
	_, errs, code = runImport(t, "-config", s.cfgPath, dbFile)
	if code != 1 || !strings.Contains(errs, "stop xapsproxy serve first, then import, then start it") || strings.Count(errs, "\n") != 1 {
		t.Fatalf("import beside serve: exit %d, stderr %q", code, errs)
	}
	s.stop()

	out, errs, code = runImport(t, "-config", s.cfgPath, dbFile)
	if code != 0 || errs != "" {
		t.Fatalf("import: exit %d\n%s%s", code, out, errs)
	}
	for _, want := range []string{
		`imported: user "alice" account "` + importedAccount + `" token c0ffee00, INBOX,Notes, version 2, registered 2026-11-30T08:15:00Z`,
		`kept the newer: user "bob" account "BOB-OLD" token b0b00000: registered with xapsproxy`,
		`invalid: user "alice" account "OLD-ACCOUNT" token alicedev: aps-device-token must be 64 hex digits`,
		`invalid: user "alice*master" account "M-1" token b0b00000: user name has watch.master_separator "*" in it`,
		dbFile + ": 1 imported, 1 already newer, 0 beyond the device limit, 2 invalid",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	for _, tok := range []string{importedToken, strings.ToLower(importedToken), bobToken} {
		if strings.Contains(out, tok) {
			t.Errorf("report shows a whole device token:\n%s", out)
		}
	}

	s.start()
	regs, err := s.app.store.All(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(regs) != 2 {
		t.Fatalf("registrations %+v, want alice's imported one and bob's own", regs)
	}
	a, b := regs[0], regs[1]
	wantTime := time.Date(2026, 11, 30, 8, 15, 0, 123456789, time.UTC)
	if a.User != "alice" || a.DeviceToken != strings.ToLower(importedToken) || a.AccountID != importedAccount || a.Version != 2 ||
		a.Topic != topic || a.Subtopic != "com.apple.mobilemail" || !slices.Equal(a.Mailboxes, []string{"INBOX", "Notes"}) ||
		!a.Registered.Equal(wantTime) || !a.Renewed.Equal(wantTime) {
		t.Errorf("imported %+v", a)
	}
	if b.AccountID != "BOB-NEW" || !b.Renewed.Equal(bobRenewed) {
		t.Errorf("bob's own registration was replaced: %+v", b)
	}

	s.waitWatching()
	s.deliver("after the switch")
	r := s.expectPushes(1, strings.ToLower(importedToken), importedAccount)
	wantMailboxes(t, r, "INBOX")

	// Importing again changes nothing: every record is as old as ours.
	s.stop()
	out, _, code = runImport(t, "-config", s.cfgPath, dbFile)
	if code != 0 || !strings.Contains(out, ": 0 imported, 2 already newer, 0 beyond the device limit, 2 invalid\n") {
		t.Errorf("second import: exit %d\n%s", code, out)
	}
}

// TestImportXapsdUnreadable: only a file that cannot be read or is no
// database fails the command, with one line naming it.
func TestImportXapsdUnreadable(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	cfg := f.write()
	dir := t.TempDir()
	notJSON := filepath.Join(dir, "database.json")
	if err := os.WriteFile(notJSON, []byte("Users:\n  alice: {}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ file, want string }{
		{filepath.Join(dir, "missing.json"), "missing.json: no such file or directory — name the daemon's databaseFile"},
		{notJSON, "database.json: not a dovecot-xaps-daemon database: invalid character"},
	} {
		out, errs, code := runImport(t, "-config", cfg, tc.file)
		if code != 1 || !strings.Contains(errs, tc.want) || strings.Count(errs, "\n") != 1 || out != "" {
			t.Errorf("%s: exit %d, stdout %q, stderr %q; want one line with %q", tc.file, code, out, errs, tc.want)
		}
	}
	if _, errs, code := runImport(t, "-config", cfg); code != 2 || !strings.Contains(errs, "name the daemon's database file") {
		t.Errorf("no file: exit %d, %q", code, errs)
	}
}

// TestImportXapsdPlan: which records are taken, by the rules of a live
// registration, the newer one winning and the device limit holding.
func TestImportXapsdPlan(t *testing.T) {
	t.Parallel()
	cfg := &config.Config{}
	cfg.Watch.MasterSeparator = "*"
	cfg.Backend.UsernameFormat = "%Ln"
	now := time.Date(2026, 12, 2, 8, 0, 0, 0, time.UTC)
	day := func(d int) time.Time { return time.Date(2026, 11, d, 12, 0, 0, 0, time.UTC) }
	tok := func(i int) string { return fmt.Sprintf("%064X", i) }
	ours := []store.Registration{{User: "carol", DeviceToken: strings.ToLower(tok(1)), Renewed: day(10)}}
	for i := range store.MaxRegistrationsPerUser - 1 {
		ours = append(ours, store.Registration{User: "dave", DeviceToken: strings.ToLower(tok(100 + i)), Renewed: day(1)})
	}
	recs := []xapsd.Record{
		{User: "Carol@Example.com", AccountID: "C-NEWER", DeviceToken: tok(1), Time: day(20)},        // newer than ours: replaces it
		{User: "carol", AccountID: "C-2", DeviceToken: tok(2), Mailboxes: nil},                       // no time: now, version 1, INBOX
		{User: "carol", AccountID: "C-2-OLD", DeviceToken: tok(2), Time: day(1)},                     // the same device, older: the one above wins
		{User: "dave", AccountID: "D-100", DeviceToken: tok(100)},                                    // ours, and no time: ours wins
		{User: "dave", AccountID: "D-NEW1", DeviceToken: tok(900), Time: day(5)},                     // the 100th device
		{User: "dave", AccountID: "D-NEW2", DeviceToken: tok(901), Time: day(5)},                     // the 101st
		{User: "erin", AccountID: "E\x01", DeviceToken: tok(3)},                                      // control character
		{User: "erin", AccountID: "", DeviceToken: tok(3)},                                           // no account id
		{User: "erin", AccountID: "E-1", DeviceToken: tok(3), Mailboxes: []string{"a\r\nb"}},         // CR LF in a name
		{User: "", AccountID: "X", DeviceToken: tok(4)},                                              // no user
		{User: "erin", AccountID: "E-2", DeviceToken: tok(5), Err: fmt.Errorf("account entry: bad")}, // Parse's verdict
	}
	p := planImport(recs, ours, cfg, topic, now)
	var got []string
	for _, r := range p.regs {
		got = append(got, fmt.Sprintf("%s %s v%d %s %s", r.User, r.AccountID, r.Version, strings.Join(r.Mailboxes, ","), r.Renewed.Format("01-02")))
	}
	want := []string{"carol C-NEWER v1 INBOX 11-20", "carol C-2 v1 INBOX 12-02", "dave D-NEW1 v1 INBOX 11-05"}
	if !slices.Equal(got, want) {
		t.Errorf("imported %q, want %q", got, want)
	}
	if len(p.newer) != 2 || !strings.Contains(p.newer[0], `"C-2-OLD"`) || !strings.Contains(p.newer[1], `"D-100"`) {
		t.Errorf("newer %q", p.newer)
	}
	if len(p.limit) != 1 || !strings.Contains(p.limit[0], `"D-NEW2"`) {
		t.Errorf("limit %q", p.limit)
	}
	wantInvalid := []string{"aps-account-id is not a valid account id", "needs aps-account-id", `mailbox name "a\r\nb" is not valid`, "no user name", "account entry: bad"}
	if len(p.invalid) != len(wantInvalid) {
		t.Fatalf("invalid %q", p.invalid)
	}
	for i, w := range wantInvalid {
		if !strings.HasSuffix(p.invalid[i], w) {
			t.Errorf("invalid %d: %q, want it to end with %q", i, p.invalid[i], w)
		}
	}
}

// TestImportXapsdReportEscapesControls: mailbox names are the devices'
// (a live registration refuses only CR, LF and NUL in them), so the report
// shows their control characters escaped: a hostile name in the daemon's
// file must not drive the operator's terminal.
func TestImportXapsdReportEscapesControls(t *testing.T) {
	t.Parallel()
	cfg := &config.Config{}
	recs := []xapsd.Record{{User: "alice", AccountID: "A-1", DeviceToken: strings.Repeat("ab", 32),
		Mailboxes: []string{"INBOX", "x\x1b]0;pwned\x07\x1b[2J\u009b31m"}, Time: time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)}}
	p := planImport(recs, nil, cfg, topic, time.Date(2026, 12, 2, 8, 0, 0, 0, time.UTC))
	if len(p.regs) != 1 {
		t.Fatalf("plan %+v, want the record imported", p)
	}
	var out bytes.Buffer
	p.report(&out, "database.json", false, false)
	if strings.ContainsAny(out.String(), "\x1b\x07\u009b") {
		t.Errorf("report has raw control characters: %q", out.String())
	}
	if !strings.Contains(out.String(), `INBOX,x\x1b]0;pwned\x07\x1b[2J\x9b31m`) {
		t.Errorf("report does not show the mailbox escaped: %q", out.String())
	}
}
