package main

// The binary on a PostgreSQL store (pgtest's real server): a device
// registers through the proxy, mail delivered by Dovecot is pushed, and
// the other commands see the registration, all without the URL's
// password in any output.

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/xapsproxy/xapsproxy/internal/dovecottest"
	"github.com/xapsproxy/xapsproxy/internal/pgtest"
	"github.com/xapsproxy/xapsproxy/store"
)

// pgPassword is put in the test URLs: pgtest's server trusts its role
// and ignores it, and no output may show it.
const pgPassword = "pg-s3cret-pw"

// withPassword returns the pgtest URL raw with pgPassword in it and its
// database renamed to db, unless db is "".
func withPassword(t *testing.T, raw, db string) string {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(u.User.Username(), pgPassword)
	if db != "" {
		u.Path = "/" + db
	}
	return u.String()
}

func TestPostgresEndToEnd(t *testing.T) {
	t.Parallel()
	dbURL := withPassword(t, pgtest.New(t), "")
	s := newStackStore(t, dovecottest.Options{}, fmt.Sprintf("postgres = %q", dbURL), "")
	p := startServe(t, s.cfgPath)
	redacted := strings.Replace(dbURL, pgPassword, "xxxxx", 1)
	if !strings.Contains(p.log(), "msg=store postgres="+strconv.Quote(redacted)+"\n") {
		t.Errorf("serve's log does not name the store as %s", redacted)
	}
	d := dialProxy(t, s, p)
	d.loginAndRegisterInbox()
	waitServeWatching(t, p)
	s.deliver("on PostgreSQL")
	checkInboxPush(t, s.expectPushes(1, v2Token, v2Account))

	list := runCommand(t, "registrations", "-config", s.cfgPath)
	if !strings.Contains(list, "alice") || !strings.Contains(list, store.ShortToken(v2Token)) {
		t.Errorf("registrations list does not show alice's device:\n%s", list)
	}

	check, _ := runCheck(t, "-config", s.cfgPath)
	wantFindings(t, check, []string{"ok    store.postgres " + redacted + ": PostgreSQL 1", "; schema version ", "; 1 account, 1 device"})

	var out, errs bytes.Buffer
	err := run(t.Context(), []string{"backup", "-config", s.cfgPath, filepath.Join(t.TempDir(), "copy.db")}, &out, &errs)
	if code := exitStatus(err, &out, &errs); code != 1 || errs.String() != "xapsproxy: store.postgres: backup copies a SQLite file; for PostgreSQL use pg_dump\n" {
		t.Errorf("backup: exit status %d, stderr %q", code, errs.String())
	}

	for what, text := range map[string]string{"serve's log": p.log(), "registrations": list, "check": check} {
		if strings.Contains(text, pgPassword) {
			t.Errorf("%s shows the database password:\n%s", what, text)
		}
	}
}

// TestPostgresStartupErrors: serve on a PostgreSQL store it cannot use
// fails with one line that names store.postgres and the fix, never the
// password.
func TestPostgresStartupErrors(t *testing.T) {
	t.Parallel()
	base := pgtest.New(t)
	silent := busyAddr(t) // the kernel accepts connections there, nobody answers
	for _, tc := range []struct {
		name  string
		url   string
		wants []string
	}{
		{"database missing", withPassword(t, base, "nosuchdb"),
			[]string{"store.postgres postgres://xapsproxy:xxxxx@", "/nosuchdb?sslmode=disable", "(SQLSTATE 3D000)", "createdb -O xapsproxy nosuchdb"}},
		{"TLS asked of a server without", strings.Replace(withPassword(t, base, ""), "sslmode=disable", "sslmode=require", 1),
			[]string{"store.postgres postgres://xapsproxy:xxxxx@", "?sslmode=require: failed to connect to `user=xapsproxy database=", "server refused TLS connection",
				"a server without TLS refuses sslmode=require and above"}},
		{"connection refused", "postgres://xapsproxy:" + pgPassword + "@" + refusedAddr(t) + "/x?sslmode=disable&connect_timeout=5",
			[]string{"store.postgres postgres://xapsproxy:xxxxx@", "refused", "is PostgreSQL running"}},
		{"no answer", "postgres://xapsproxy:" + pgPassword + "@" + silent + "/x?sslmode=disable&connect_timeout=1",
			[]string{"store.postgres postgres://xapsproxy:xxxxx@", "no answer from " + silent}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t)
			delete(f.keys, "store.path")
			f.set("store.postgres", tc.url)
			code, stderr := runServe(t, f.write(), false)
			checkStartupLine(t, code, stderr, tc.wants...)
			if strings.Contains(stderr, pgPassword) {
				t.Errorf("the line shows the password: %s", stderr)
			}
		})
	}
	// postgres_file: the key named is the file's.
	f := newFixture(t)
	delete(f.keys, "store.path")
	f.set("store.postgres_file", f.file("pg-url", []byte(withPassword(t, base, "nosuchdb")+"\n")))
	code, stderr := runServe(t, f.write(), false)
	checkStartupLine(t, code, stderr, "store.postgres_file "+filepath.Join(f.dir, "pg-url")+" (postgres://xapsproxy:xxxxx@", "3D000")
	if data, err := os.ReadFile(filepath.Join(f.dir, "pg-url")); err != nil || strings.Contains(stderr, strings.TrimSpace(string(data))) {
		t.Errorf("the line shows the URL as written: %s", stderr)
	}
}

// refusedAddr returns a loopback address nothing listens on.
func refusedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// TestCheckPostgres: check looks at a PostgreSQL store without changing
// it, and refuses one a newer xapsproxy migrated.
func TestCheckPostgres(t *testing.T) {
	t.Parallel()
	dbURL := withPassword(t, pgtest.New(t), "")
	f := newFixture(t)
	delete(f.keys, "store.path")
	f.set("store.postgres", dbURL)
	cfg := f.write()
	redacted := strings.Replace(dbURL, pgPassword, "xxxxx", 1)
	out, _ := runCheck(t, "-config", cfg)
	wantFindings(t, out, []string{"ok    store.postgres " + redacted + ": PostgreSQL 1", "; no schema yet (serve creates it); 0 accounts"})

	conn, err := pgx.Connect(t.Context(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var exists bool
	if err := conn.QueryRow(t.Context(), `SELECT to_regclass('xapsproxy_schema') IS NOT NULL`).Scan(&exists); err != nil || exists {
		t.Fatalf("after check, the schema table exists %v (%v): check migrated", exists, err)
	}
	newer := store.PostgresSchemaVersion() + 1
	if _, err := conn.Exec(t.Context(), fmt.Sprintf(`CREATE TABLE xapsproxy_schema (version integer NOT NULL); INSERT INTO xapsproxy_schema VALUES (%d)`, newer)); err != nil {
		t.Fatal(err)
	}
	out, code := runCheck(t, "-config", cfg)
	wantFindings(t, out, []string{"FAIL  store.postgres " + redacted + ": schema version " + strconv.Itoa(newer) + " is newer than this xapsproxy supports", "run that version"})
	if code != 1 || strings.Contains(out, pgPassword) {
		t.Errorf("exit status %d (want 1), or the output shows the password:\n%s", code, out)
	}
}

// TestImportXapsdPostgres: import-xapsd writes to a PostgreSQL store, and
// since it cannot tell whether a serve uses the database, says so rather
// than refusing or claiming none does.
func TestImportXapsdPostgres(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	delete(f.keys, "store.path")
	f.set("store.postgres", withPassword(t, pgtest.New(t), ""))
	cfg := f.write()
	dbFile := f.file("database.json", []byte(xapsdDatabase))
	out, errs, code := runImport(t, "-config", cfg, dbFile)
	if code != 0 || !strings.Contains(out, dbFile+": 2 imported, 0 already newer, 0 beyond the device limit, 2 invalid\n") ||
		!strings.Contains(out, "note: store.postgres: import-xapsd cannot tell whether a serve uses this database; one that was running watches the imported accounts only once restarted\n") {
		t.Fatalf("import: exit %d\n%s%s", code, out, errs)
	}
	list := runCommand(t, "registrations", "-config", cfg)
	for _, want := range []string{"alice", strings.ToLower(importedToken)[:8], "bob", bobToken[:8]} {
		if !strings.Contains(list, want) {
			t.Errorf("registrations list lacks %q:\n%s", want, list)
		}
	}
	if strings.Contains(out+errs+list, pgPassword) {
		t.Errorf("the output shows the password:\n%s%s%s", out, errs, list)
	}
}

// TestPostgresWrongPassword: on a server of the test's own whose
// pg_hba.conf asks the role pwuser for its password, serve given a wrong
// one fails with SQLSTATE 28P01 named, and neither password shown.
func TestPostgresWrongPassword(t *testing.T) {
	t.Parallel()
	srv := pgtest.Start(t) // its own: pg_hba.conf changes
	admin := srv.New(t)
	conn, err := pgx.Connect(t.Context(), admin)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var hbaFile string
	if err := conn.QueryRow(t.Context(), `SHOW hba_file`).Scan(&hbaFile); err != nil {
		t.Fatal(err)
	}
	hba, err := os.ReadFile(hbaFile)
	if err != nil {
		t.Fatal(err)
	}
	// First match wins: pwuser needs its password, the rest stays trusted.
	hba = append([]byte("host all pwuser 127.0.0.1/32 scram-sha-256\n"), hba...)
	if err := os.WriteFile(hbaFile, hba, 0o600); err != nil {
		t.Fatal(err)
	}
	var reloaded bool
	if _, err := conn.Exec(t.Context(), `CREATE ROLE pwuser LOGIN PASSWORD 'right-pw-1'`); err != nil {
		t.Fatal(err)
	}
	if err := conn.QueryRow(t.Context(), `SELECT pg_reload_conf()`).Scan(&reloaded); err != nil || !reloaded {
		t.Fatalf("pg_reload_conf: %v, %v", reloaded, err)
	}
	u, err := url.Parse(admin)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword("pwuser", pgPassword)
	f := newFixture(t)
	delete(f.keys, "store.path")
	f.set("store.postgres", u.String())
	cfg := f.write()
	// The reload is asynchronous: wait until the server asks for the
	// password, then serve's start-up line.
	waitUntil(t, "pg_hba.conf reloaded", func() bool {
		c, err := pgx.Connect(t.Context(), u.String())
		if err == nil {
			c.Close(context.Background())
		}
		return err != nil
	})
	code, stderr := runServe(t, cfg, false)
	checkStartupLine(t, code, stderr, "store.postgres postgres://pwuser:xxxxx@", `password authentication failed for user "pwuser" (SQLSTATE 28P01)`,
		"the password in the URL is not pwuser's")
	if strings.Contains(stderr, pgPassword) || strings.Contains(stderr, "right-pw-1") {
		t.Errorf("the line shows a password: %s", stderr)
	}
}
