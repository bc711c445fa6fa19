package config

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// withStore is minimal with a [store] section holding body.
func withStore(body string) string { return minimal + "[store]\n" + body + "\n" }

const pgURL = "postgres://xaps:s3cr%40t@db.example.com:5432/xapsproxy?sslmode=verify-full"

func TestStorePostgres(t *testing.T) {
	t.Parallel()
	for _, scheme := range []string{"postgres", "postgresql"} {
		u := strings.Replace(pgURL, "postgres:", scheme+":", 1)
		cfg, err := Parse(withStore(`postgres = "`+u+`"`), "/etc/xapsproxy")
		if err != nil {
			t.Fatalf("%s: %v", scheme, err)
		}
		s := cfg.Store
		// path's default is not a path given: nothing says SQLite.
		if s.Path != "" || s.Postgres != u || !s.IsPostgres() || s.Key() != "store.postgres" {
			t.Errorf("%s: store %+v, key %s", scheme, s, s.Key())
		}
		if want := scheme + "://xaps:xxxxx@db.example.com:5432/xapsproxy?sslmode=verify-full"; s.Where() != want {
			t.Errorf("Where = %q, want %q", s.Where(), want)
		}
	}
	// A Unix socket, no host in the URL.
	if _, err := Parse(withStore(`postgres = "postgres:///xapsproxy?host=/run/postgresql"`), "/"); err != nil {
		t.Errorf("socket URL: %v", err)
	}
}

func TestStoreSQLiteDefault(t *testing.T) {
	t.Parallel()
	cfg, err := Parse(minimal, "/etc/xapsproxy")
	if err != nil {
		t.Fatal(err)
	}
	s := cfg.Store
	if s.IsPostgres() || s.Key() != "store.path" || s.Where() != "/etc/xapsproxy/xapsproxy.db" {
		t.Errorf("store %+v: IsPostgres %v, Key %s, Where %s", s, s.IsPostgres(), s.Key(), s.Where())
	}
}

func TestStorePostgresFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "db-url"), []byte(pgURL+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Parse(withStore(`postgres_file = "db-url"`), dir)
	if err != nil {
		t.Fatal(err)
	}
	s := cfg.Store
	if s.Postgres != pgURL || s.PostgresFile != filepath.Join(dir, "db-url") || s.Path != "" || s.Key() != "store.postgres_file" {
		t.Errorf("store %+v, key %s", s, s.Key())
	}
	if strings.Contains(s.Where(), "s3cr") {
		t.Errorf("Where shows the password: %s", s.Where())
	}
}

func TestStoreErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name, data string, mode os.FileMode) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), mode); err != nil {
			t.Fatal(err)
		}
	}
	write("empty", "\n", 0o600)
	write("open", pgURL, 0o644)
	write("mysql", "mysql://u:hunter2@h/db\n", 0o600)
	for _, tt := range []struct{ name, body, want string }{
		{"both postgres keys", `postgres = "` + pgURL + `"` + "\n" + `postgres_file = "x"`,
			"store.postgres: set postgres or postgres_file, not both"},
		{"path and postgres", `path = "x.db"` + "\n" + `postgres = "` + pgURL + `"`,
			"store.postgres: set path (a SQLite file) or postgres (PostgreSQL), not both — remove one"},
		{"path and postgres_file", `path = "x.db"` + "\n" + `postgres_file = "empty"`,
			"store.postgres_file: set path (a SQLite file) or postgres_file (PostgreSQL), not both"},
		{"empty path", `path = ""`, "store.path: must not be empty"},
		{"missing file", `postgres_file = "nope"`, "store.postgres_file " + filepath.Join(dir, "nope") + ": no such file or directory — check the path"},
		{"file open to others", `postgres_file = "open"`, "store.postgres_file " + filepath.Join(dir, "open") + ": is open to others (mode 0644) — chmod o-rwx"},
		{"empty file", `postgres_file = "empty"`, "store.postgres_file " + filepath.Join(dir, "empty") + ": file is empty — write the database URL in it, on one line: postgres://"},
		{"scheme in file", `postgres_file = "mysql"`, "store.postgres_file " + filepath.Join(dir, "mysql") + ": scheme mysql is not postgres or postgresql — give postgres://USER:PASSWORD@HOST:PORT/DB?sslmode=verify-full"},
		{"scheme", `postgres = "mysql://u:hunter2@h/db"`, "store.postgres: scheme mysql is not postgres or postgresql — give postgres://"},
		{"no scheme", `postgres = "u:hunter2@h/db"`, "store.postgres: scheme u is not postgres or postgresql"},
		{"no scheme at all", `postgres = "//u:hunter2@h/db"`, "store.postgres: not a URL (no postgres:// in front)"},
		{"key=value form", `postgres = "host=h user=u password=hunter2"`, "store.postgres: not a URL (no postgres:// in front)"},
		{"opaque", `postgres = "postgres:u:hunter2@h"`, "store.postgres: not a URL (no // after postgres:)"},
		// An unescaped / in the password makes the rest a bad port: the
		// parser's message would quote it.
		{"unescaped password", `postgres = "postgres://u:hun/ter2@h/db"`, "store.postgres: not a URL — give postgres://USER:PASSWORD@HOST:PORT/DB?sslmode=verify-full, with characters such as @ : / ? # % in the password percent-encoded"},
		{"bad escape", `postgres = "postgres://u:hunter2%zz@h/db"`, "store.postgres: not a URL"},
		{"sslmode", `postgres = "postgres://u:hunter2@h/db?sslmode=on"`, `store.postgres: sslmode "on" is not one of disable, allow, prefer, require, verify-ca, verify-full — use verify-full`},
		{"query", `postgres = "postgres://u:hunter2@h/db?sslmode=%zz"`, "store.postgres: the part after ? does not parse"},
		{"two lines", `postgres = "postgres://u:hunter2@h/db\nx"`, "store.postgres: the URL spans several lines — put it on one line"},
		// The drivers would connect with these passwords, which net/url
		// takes for a fragment or a query.
		{"unescaped #", `postgres = "postgres://u:#hunter2@h/db"`, "store.postgres: a ? or # in the user or password is not percent-encoded"},
		{"unescaped ?", `postgres = "postgres://u:?hunter2@h/db"`, "store.postgres: a ? or # in the user or password is not percent-encoded"},
		{"fragment", `postgres = "postgres://u:hunter2@h/db#x"`, "store.postgres: a ? or # in the user or password is not percent-encoded"},
	} {
		_, err := Parse(withStore(tt.body), dir)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: err = %v, want it to contain %q", tt.name, err, tt.want)
			continue
		}
		if msg := err.Error(); strings.Contains(msg, "hunter2") || strings.Contains(msg, "s3cr") || strings.Contains(msg, "\n") {
			t.Errorf("%s: the error shows the password or spans lines: %q", tt.name, msg)
		}
	}
	var ce *Error
	if _, err := Parse(withStore(`postgres_file = "nope"`), dir); !errors.As(err, &ce) || !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing postgres_file: %v is not a config.Error with fs.ErrNotExist", err)
	}
}

// With PostgreSQL there is no directory to put the key of captured
// passwords in: it must be named.
func TestStoreCapturedKey(t *testing.T) {
	t.Parallel()
	doc := strings.Replace(minimal, "master_user = \"xaps\"\nmaster_password = \"pw\"", `auth = "captured"`, 1)
	_, err := Parse(doc+"[store]\npostgres = \""+pgURL+"\"\n", "/etc/xapsproxy")
	want := `watch.secret_key_file: required with auth = "captured" and store.postgres — name the file holding the key`
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("err = %v, want %q", err, want)
	}
	doc = strings.Replace(doc, `auth = "captured"`, "auth = \"captured\"\nsecret_key_file = \"secret.key\"", 1)
	cfg, err := Parse(doc+"[store]\npostgres = \""+pgURL+"\"\n", "/etc/xapsproxy")
	if err != nil || cfg.Watch.SecretKeyFile != "/etc/xapsproxy/secret.key" {
		t.Errorf("with secret_key_file: %v, %+v", err, cfg)
	}
}

func TestRedactURL(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"postgres://u:pw@h/db":                          "postgres://u:xxxxx@h/db",
		"postgres://u@h/db?sslmode=disable":             "postgres://u@h/db?sslmode=disable",
		"postgres://u@h/db?password=pw&sslmode=require": "postgres://u@h/db?password=xxxxx&sslmode=require",
		"postgres:///db?host=/run/postgresql":           "postgres:///db?host=/run/postgresql",
		"postgres://u:p/w@h/db":                         "(a URL that does not parse)",
		"postgres:u:pw@h":                               "(a URL that does not parse)",
		// The drivers take what follows the : up to the last @ before the
		// first / for the password; net/url a query or fragment.
		"postgres://xaps:#Secret!@db/xaps":    "(a URL that does not parse)",
		"postgres://xaps:?Secret@db/xaps":     "(a URL that does not parse)",
		"postgres://xaps:2024#Secret@db/xaps": "(a URL that does not parse)",
		"postgres://u@h/db?sslpassword=KEYPW": "postgres://u@h/db?sslpassword=xxxxx",
	} {
		if got := RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
}
