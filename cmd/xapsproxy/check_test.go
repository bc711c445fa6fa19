package main

// xapsproxy check against a real Dovecot, the fake APNs and the test PKI:
// a good configuration passes, and each problem is one FAIL line with its
// fix, all of them in one run.

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/xapsproxy/xapsproxy/internal/apnstest"
	"github.com/xapsproxy/xapsproxy/internal/dovecottest"
	"github.com/xapsproxy/xapsproxy/internal/testpki"
	"github.com/xapsproxy/xapsproxy/store"
)

// checkFixture is a fixture whose backend is a real Dovecot and whose
// APNs is the fake one, with a store of registered accounts.
type checkFixture struct {
	*fixture
	dovecot *dovecottest.Dovecot
	apns    *apnstest.Server
}

func newCheckFixture(t *testing.T, d *dovecottest.Dovecot) *checkFixture {
	t.Helper()
	f := newFixture(t)
	fake := apnstest.Start(t, f.ca, topic)
	f.set("backend.address", d.IMAPAddr)
	f.set("watch.master_user", d.MasterUser)
	f.set("watch.master_password", d.MasterPassword)
	f.set("apns.endpoint", fake.URL)
	f.set("apns.ca_file", f.ca.WriteCA(t, f.dir))
	return &checkFixture{fixture: f, dovecot: d, apns: fake}
}

// register stores devices registrations for each user.
func (f *checkFixture) register(devices map[string]int) {
	f.t.Helper()
	st, err := store.Open(f.t.Context(), filepath.Join(f.dir, "xapsproxy.db"))
	if err != nil {
		f.t.Fatal(err)
	}
	defer st.Close()
	for user, n := range devices {
		for i := range n {
			err := st.Register(f.t.Context(), store.Registration{User: user, DeviceToken: fmt.Sprintf("%064x", i+1), AccountID: "acct-" + user,
				Subtopic: "com.apple.mobilemail", Mailboxes: []string{"INBOX"}, Version: 2, Topic: topic, Renewed: time.Now()})
			if err != nil {
				f.t.Fatal(err)
			}
		}
	}
}

// check runs xapsproxy check on the fixture's configuration with the test
// Dovecot's own config for the limits, and returns its output and exit
// status as main would.
func (f *checkFixture) check(args ...string) (string, int) {
	f.t.Helper()
	return runCheck(f.t, append([]string{"-config", f.write(), "-dovecot-config", filepath.Join(f.dovecot.Dir, "dovecot.conf")}, args...)...)
}

func runCheck(t *testing.T, args ...string) (string, int) {
	t.Helper()
	var out, errs bytes.Buffer
	err := run(t.Context(), append([]string{"check"}, args...), &out, &errs)
	code := exitStatus(err, &out, &errs)
	checkLines(t, out.String())
	return out.String() + errs.String(), code
}

// checkLine is the shape of every line of check's report but the last.
var checkLine = regexp.MustCompile(`^(ok    |note  |warn  |FAIL  )\S`)

// checkLines asserts that every finding is one line of a known kind and
// that the report ends with its summary.
func checkLines(t *testing.T, out string) {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	for _, l := range lines[:len(lines)-1] {
		if !checkLine.MatchString(l) {
			t.Errorf("line %q is not a finding", l)
		}
	}
	if last := lines[len(lines)-1]; !regexp.MustCompile(`^\d+ problems?, \d+ warnings?$`).MatchString(last) {
		t.Errorf("last line %q is not the summary", last)
	}
}

// wantFindings asserts that out has a line starting with each prefix and
// containing each of the rest.
func wantFindings(t *testing.T, out string, wants ...[]string) {
	t.Helper()
	for _, want := range wants {
		found := false
		for l := range strings.Lines(out) {
			has := strings.HasPrefix(l, want[0])
			for _, w := range want[1:] {
				has = has && strings.Contains(l, w)
			}
			found = found || has
		}
		if !found {
			t.Errorf("no line starting %q with %q:\n%s", want[0], want[1:], out)
		}
	}
}

func TestCheckGood(t *testing.T) {
	t.Parallel()
	f := newCheckFixture(t, dovecottest.Start(t, dovecottest.Options{}))
	f.register(map[string]int{"alice": 2, "bob": 1})
	out, code := f.check()
	if code != 0 {
		t.Fatalf("exit status %d, want 0:\n%s", code, out)
	}
	db := filepath.Join(f.dir, "xapsproxy.db")
	wantFindings(t, out,
		[]string{"ok    config " + filepath.Join(f.dir, "xapsproxy.toml") + "\n"},
		[]string{"ok    store " + db + ": writable; schema version", "; 2 accounts, 3 devices"},
		[]string{"ok    proxy.cert_file ", ": covers localhost; valid until "},
		[]string{"warn  proxy.cert_file ", "the certificate expires in 2", "renew it"},
		[]string{`ok    proxy.listen_tls "127.0.0.1:0": free to listen on`},
		[]string{"ok    apns credentials: APNs certificate (PEM ", "topic " + topic},
		[]string{"warn  apns.certificate_file ", "the APNs certificate expires in 2"},
		[]string{"ok    apns.endpoint " + f.apns.URL + ": TLS handshake ok (TLS 1.3, HTTP/2), client certificate presented"},
		[]string{"ok    backend " + f.dovecot.IMAPAddr + " (tls none): reachable; capabilities before login: ", "AUTH=PLAIN"},
		[]string{"note  master login tried for alice, bob (2 of 2 accounts in the store)"},
		[]string{"ok    master login as alice*master: ok"},
		[]string{"ok    master login as bob*master: ok"},
		[]string{"ok    event source for all 2 accounts: notify (", "the backend offers NOTIFY after login)"},
		[]string{"ok    dovecot limits (doveconf -c " + f.dovecot.Dir + "/dovecot.conf): service imap process_limit 1024, client_limit 1; mail_max_userip_connections 10; imap_hibernate_timeout 0;"},
		[]string{"note  dovecot imap_hibernate_timeout is unset"},
		[]string{"0 problems, "},
	)
	if strings.Contains(out, f.dovecot.MasterPassword) {
		t.Errorf("the output shows the master password:\n%s", out)
	}
}

// TestCheckProblems: each broken part gives its one FAIL line with the fix
// and a failing exit status, and the other checks still run.
func TestCheckProblems(t *testing.T) {
	t.Parallel()
	d := dovecottest.Start(t, dovecottest.Options{})
	for _, tc := range []struct {
		name string
		// breakIt breaks the fixture and returns extra flags.
		breakIt func(f *checkFixture) []string
		want    [][]string
		absent  []string // must not be in the output
	}{
		{"store directory missing", func(f *checkFixture) []string {
			f.set("store.path", filepath.Join(f.dir, "nope", "x.db"))
			return nil
		}, [][]string{{"FAIL  store.path " + "DIR/nope/x.db: no such file or directory — create it (mkdir -p DIR/nope)"}}, nil},
		{"store directory is a file", func(f *checkFixture) []string {
			f.file("plain", []byte("x"))
			f.set("store.path", filepath.Join(f.dir, "plain", "x.db"))
			return nil
		}, [][]string{{"FAIL  store.path DIR/plain/x.db: DIR/plain is not a directory — point store.path at"}}, nil},
		{"not a xapsproxy database", func(f *checkFixture) []string {
			f.file("xapsproxy.db", bytes.Repeat([]byte("not a database "), 10))
			return nil
		}, [][]string{{"FAIL  store.path DIR/xapsproxy.db: ", "not a database"}}, nil},
		{"proxy certificate missing", func(f *checkFixture) []string {
			f.set("proxy.cert_file", filepath.Join(f.dir, "missing.crt"))
			return nil
		}, [][]string{{"FAIL  proxy.cert_file DIR/missing.crt: no such file or directory — check the path"}}, nil},
		{"listen address in use", func(f *checkFixture) []string {
			f.set("proxy.listen_starttls", busyAddr(f.t))
			return nil
		}, [][]string{{`FAIL  proxy.listen_starttls "127.0.0.1:`, "address already in use — is Dovecot (or another xapsproxy) listening there?"}}, nil},
		{"APNs endpoint refuses", func(f *checkFixture) []string {
			f.set("apns.endpoint", "https://127.0.0.1:1")
			return nil
		}, [][]string{{"FAIL  apns.endpoint https://127.0.0.1:1: TLS handshake with 127.0.0.1:1: ", "connection refused — nothing listens at 127.0.0.1:1"}}, nil},
		{"APNs endpoint of another CA", func(f *checkFixture) []string {
			f.set("apns.ca_file", testpki.NewCA(f.t).WriteCA(f.t, f.t.TempDir()))
			return nil
		}, [][]string{{"FAIL  apns.endpoint https://127.0.0.1:", "certificate signed by unknown authority", " — the endpoint's certificate is not trusted", "set apns.ca_file to the CA"}}, nil},
		{"backend unreachable", func(f *checkFixture) []string {
			f.set("backend.address", "127.0.0.1:1")
			return nil
		}, [][]string{{`FAIL  backend.address "127.0.0.1:1": `, "connection refused — nothing listens at 127.0.0.1:1: is Dovecot running?"}}, nil},
		{"wrong master password", func(f *checkFixture) []string {
			f.set("watch.master_password", "Wr0ngMasterSecret")
			f.register(map[string]int{"alice": 1, "bob": 1})
			return nil
		}, [][]string{{"FAIL  master login as alice*master: NO [AUTHENTICATIONFAILED] ", "the backend refused the master user's credentials for every user tried (alice, bob) — check watch.master_user (\"master\"), watch.master_password and watch.master_separator (\"*\")", "doveadm auth test 'alice*master'"}},
			[]string{"Wr0ngMasterSecret", "knows no user", "master login as bob*master"}},
		{"wrong master password in a file", func(f *checkFixture) []string {
			delete(f.keys, "watch.master_password")
			f.set("watch.master_password_file", f.file("master.pw", []byte("Wr0ngMasterSecret\n")))
			return []string{"-user", "alice"}
		}, [][]string{{"FAIL  master login as alice*master: NO [AUTHENTICATIONFAILED] ", "(alice)", "watch.master_password_file (DIR/master.pw)"}},
			[]string{"Wr0ngMasterSecret"}},
		{"wrong master separator", func(f *checkFixture) []string {
			f.set("watch.master_separator", "#")
			f.register(map[string]int{"bob": 1})
			return []string{"-user", "alice"}
		}, [][]string{{"FAIL  master login as alice#master: NO [AUTHENTICATIONFAILED] ", "every user tried (alice, bob)", "watch.master_separator (\"#\")", "doveadm auth test 'alice#master'"}}, nil},
		{"unknown user", func(f *checkFixture) []string {
			return []string{"-user", "nosuch"}
		}, [][]string{{"FAIL  master login as nosuch*master: NO [AUTHORIZATIONFAILED] ", "the master user and password were accepted, but the backend knows no user \"nosuch\"", "doveadm auth test 'nosuch*master'"}},
			[]string{"watch.master_password"}},
		{"unknown registered user beside a known one", func(f *checkFixture) []string {
			f.register(map[string]int{"alice": 1, "ghost": 1})
			return nil
		}, [][]string{
			{"ok    master login as alice*master: ok"},
			{"FAIL  master login as ghost*master: NO [AUTHORIZATIONFAILED] ", "knows no user \"ghost\""},
			{"ok    event source for all 2 accounts: notify ("},
		}, []string{"watch.master_password"}},
		{"several problems", func(f *checkFixture) []string {
			f.set("proxy.cert_file", filepath.Join(f.dir, "missing.crt"))
			f.set("proxy.listen_tls", busyAddr(f.t))
			f.set("apns.endpoint", "https://127.0.0.1:1")
			f.set("backend.address", "127.0.0.1:1")
			return nil
		}, [][]string{
			{"FAIL  proxy.cert_file "}, {"FAIL  proxy.listen_tls "}, {"FAIL  apns.endpoint "}, {"FAIL  backend.address "},
			{"ok    store "}, {"ok    apns credentials: "},
			{"4 problems, "},
		}, nil},
	} {
		// Not parallel: the parent holds its Dovecot while the subtests
		// run, and parallel subtests waiting for a slot behind a test that
		// waits for Dovecot to itself (TestDovecotKilledUnderLoad) would
		// never get one.
		t.Run(tc.name, func(t *testing.T) {
			f := newCheckFixture(t, d)
			args := tc.breakIt(f)
			out, code := f.check(args...)
			if code != 1 {
				t.Errorf("exit status %d, want 1", code)
			}
			for _, w := range tc.want {
				for i := range w {
					w[i] = strings.ReplaceAll(w[i], "DIR", f.dir)
				}
			}
			wantFindings(t, out, tc.want...)
			if !strings.Contains(out, "xapsproxy: check found problems: ") {
				t.Errorf("no failure line on stderr:\n%s", out)
			}
			for _, a := range tc.absent {
				if strings.Contains(out, a) {
					t.Errorf("output has %q:\n%s", a, out)
				}
			}
		})
	}
}

// TestCheckBesideServe: while a serve holds the store, check reads it, and
// addresses in use are that serve's, not problems.
func TestCheckBesideServe(t *testing.T) {
	t.Parallel()
	f := newCheckFixture(t, dovecottest.Start(t, dovecottest.Options{}))
	f.register(map[string]int{"alice": 1})
	l, err := store.Lock(filepath.Join(f.dir, "xapsproxy.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	f.set("proxy.listen_tls", busyAddr(t))
	out, code := f.check()
	if code != 0 {
		t.Errorf("exit status %d, want 0:\n%s", code, out)
	}
	wantFindings(t, out,
		[]string{"note  store " + filepath.Join(f.dir, "xapsproxy.db") + ": a serve is running on it (PID " + fmt.Sprint(os.Getpid()) + " holds "},
		[]string{"ok    store " + filepath.Join(f.dir, "xapsproxy.db") + ": writable; ", "1 account, 1 device"},
		[]string{`note  proxy.listen_tls "127.0.0.1:`, fmt.Sprintf("in use, presumably by the running serve (PID %d)", os.Getpid())},
		[]string{"0 problems, "})
}

// TestCheckCaptured: with captured passwords no master login is tried.
func TestCheckCaptured(t *testing.T) {
	t.Parallel()
	f := newCheckFixture(t, dovecottest.Start(t, dovecottest.Options{}))
	f.captured()
	f.register(map[string]int{"alice": 1})
	out, code := f.check("-user", "alice")
	if code != 0 {
		t.Errorf("exit status %d, want 0:\n%s", code, out)
	}
	wantFindings(t, out,
		[]string{"ok    watch.secret_key_file ", "does not exist yet (serve creates it)"},
		[]string{`note  watch.auth = "captured": watchers log in with each user's own password, captured at their next login through the proxy, so no master login is tried (-user ignored)`},
		[]string{"note  event source: decided per account after its login"})
	if strings.Contains(out, "master login as") {
		t.Errorf("a master login was tried:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(f.dir, "secret.key")); err == nil {
		t.Error("check created the secret key")
	}
}

// TestCheckNoAccounts: without registered accounts or -user, check says
// that it did not try the master login. (With proxy_protocol set, it lists
// the trusted balancers.)
func TestCheckNoAccounts(t *testing.T) {
	t.Parallel()
	f := newCheckFixture(t, dovecottest.Start(t, dovecottest.Options{}))
	f.keys["proxy.proxy_protocol"] = `["10.0.0.5", "10.1.2.3/16"]`
	out, code := f.check()
	if code != 0 {
		t.Errorf("exit status %d, want 0:\n%s", code, out)
	}
	wantFindings(t, out,
		[]string{"ok    store " + filepath.Join(f.dir, "xapsproxy.db") + ": directory writable; no database yet (serve creates it); 0 accounts"},
		[]string{"note  master login not tried: the store has no registered accounts; pass -user NAME to test it"},
		[]string{"note  proxy.proxy_protocol: connections from 10.0.0.5/32, 10.1.0.0/16 must start with a PROXY header"})
	if _, err := os.Stat(filepath.Join(f.dir, "xapsproxy.db")); err == nil {
		t.Error("check created the database")
	}
}

// TestCheckDovecotLimits: the test Dovecot's limits, set low, against a
// store of 3 accounts with 4 devices.
func TestCheckDovecotLimits(t *testing.T) {
	t.Parallel()
	d := dovecottest.Start(t, dovecottest.Options{
		Users:       map[string]string{"alice": "alicepw", "bob": "bobpw", "carol": "carolpw"},
		ExtraConfig: "service imap {\n  process_limit = 4\n}\nmail_max_userip_connections = 2\n",
	})
	f := newCheckFixture(t, d)
	f.register(map[string]int{"alice": 2, "bob": 1, "carol": 1})
	out, code := f.check()
	if code != 0 {
		t.Errorf("exit status %d, want 0 (warnings only):\n%s", code, out)
	}
	wantFindings(t, out,
		[]string{"ok    dovecot limits (doveconf -c ", "service imap process_limit 4, client_limit 1; mail_max_userip_connections 2; imap_hibernate_timeout 0"},
		[]string{"warn  dovecot service imap process_limit 4 (client_limit 1) allows 4 imap sessions, fewer than the 3 accounts' watchers and the 4 devices' own sessions need (7) — raise it: service imap { process_limit = 14 }"},
		[]string{"warn  dovecot mail_max_userip_connections 2 is below what one account needs (3: its watcher and each of its devices' sessions all come from the proxy's address)"},
		[]string{"note  dovecot imap_hibernate_timeout is unset"},
		[]string{"0 problems, "})

	// With Dovecot's own events the limits do not grow with the accounts.
	f.set("watch.source", "dovecot")
	f.set("events.secret", "an-events-secret-of-some-length")
	f.set("events.listen", "127.0.0.1:0")
	out, code = f.check()
	if code != 0 {
		t.Errorf("dovecot events: exit status %d, want 0:\n%s", code, out)
	}
	wantFindings(t, out,
		[]string{`ok    events.listen "127.0.0.1:0": free to listen on`},
		[]string{"ok    event source for all 3 accounts: dovecot events (watch.source = dovecot); the catch-up after a restart logs in with the master user"},
		[]string{"note  with dovecot events the watchers hold no connection per account, so these limits don't grow with the 3 accounts"})
	if strings.Contains(out, "warn  dovecot") {
		t.Errorf("limits warned about with dovecot events:\n%s", out)
	}
}

// TestCheckConfigError: a configuration that does not validate is one
// FAIL line naming the key, and nothing else is checked.
func TestCheckConfigError(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.set("backend.tls", "bogus")
	path := f.write()
	out, code := runCheck(t, "-config", path)
	if code != 1 {
		t.Errorf("exit status %d, want 1", code)
	}
	wantFindings(t, out, []string{"FAIL  " + path + `: backend.tls: "bogus" is not one of`}, []string{"1 problem, 0 warnings"})
	if strings.Contains(out, "ok    ") {
		t.Errorf("checks ran after the configuration failed:\n%s", out)
	}
}

// TestCheckDovecotConfigUnreadable: a -dovecot-config doveconf cannot read
// is a warning, and the other checks are not affected.
func TestCheckDovecotConfigUnreadable(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	missing := filepath.Join(f.dir, "dovecot.conf")
	out, _ := runCheck(t, "-config", f.write(), "-dovecot-config", missing)
	wantFindings(t, out, []string{"warn  -dovecot-config " + missing + ": Dovecot's limits not checked: "})
	if strings.Contains(out, "ok    dovecot limits") {
		t.Errorf("limits reported from a missing file:\n%s", out)
	}
}

// TestCheckBesideServeProcess: the same beside a real serve process,
// which holds the store and its port.
func TestCheckBesideServeProcess(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	addr := freeAddr(t)
	f.set("proxy.listen_tls", addr)
	cfg := f.write()
	serve := startServe(t, cfg)
	out, _ := runCheck(t, "-config", cfg, "-dovecot-config", filepath.Join(f.dir, "none.conf"))
	wantFindings(t, out,
		[]string{"note  store " + filepath.Join(f.dir, "xapsproxy.db") + fmt.Sprintf(": a serve is running on it (PID %d holds ", serve.pid())},
		[]string{fmt.Sprintf(`note  proxy.listen_tls %q: in use, presumably by the running serve (PID %d)`, addr, serve.pid())})
	if strings.Contains(out, "FAIL  proxy.listen_tls") || strings.Contains(out, "FAIL  store") {
		t.Errorf("the running serve's store or port reported as a problem:\n%s", out)
	}
}
