package config

import (
	"errors"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
)

// Store is where registrations and mailbox state live: a SQLite file (the
// default) or a PostgreSQL database that several instances may share.
type Store struct {
	Path string `toml:"path"` // SQLite database file; "" when PostgreSQL is configured
	// Postgres is the URL of a PostgreSQL database,
	// postgres://USER:PASSWORD@HOST:PORT/DB?sslmode=verify-full; read
	// from PostgresFile when that is set.
	Postgres     string `toml:"postgres"`
	PostgresFile string `toml:"postgres_file"` // file holding the URL; trailing newline ignored
}

// IsPostgres reports whether the store is a PostgreSQL database.
func (s *Store) IsPostgres() bool { return s.Postgres != "" || s.PostgresFile != "" }

// Key is the configuration key that names the store, for error messages:
// "store.path", "store.postgres" or "store.postgres_file".
func (s *Store) Key() string {
	switch {
	case s.PostgresFile != "":
		return "store.postgres_file"
	case s.Postgres != "":
		return "store.postgres"
	}
	return "store.path"
}

// Where is the store for messages and logs: the SQLite path, or the
// PostgreSQL URL with its password redacted.
func (s *Store) Where() string {
	if s.IsPostgres() {
		return RedactURL(s.Postgres)
	}
	return s.Path
}

// RedactURL returns a database URL fit for a log line: its password, in
// the user part or as a password= parameter, is replaced by xxxxx. A
// string that does not parse as a URL is not shown at all, since where
// its password is cannot be told.
func RedactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.Opaque != "" || ambiguousUserInfo(s) {
		return "(a URL that does not parse)"
	}
	q, changed := u.Query(), false
	for k := range q {
		// password, and sslpassword (the client key's passphrase).
		if strings.Contains(strings.ToLower(k), "password") {
			q.Set(k, "xxxxx")
			changed = true
		}
	}
	if changed {
		u.RawQuery = q.Encode()
	}
	return u.Redacted()
}

// ambiguousUserInfo reports whether raw holds a ? or # before its user
// part's @: PostgreSQL's drivers (libpq, pgx) end the user part at the last
// @ before the first /, while Go's net/url ends it at the first ? or #, so
// such a URL connects with a password that url.Parse takes for a query or a
// fragment (and Redacted would show).
func ambiguousUserInfo(raw string) bool {
	_, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return false
	}
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		rest = rest[:i]
	}
	at := strings.LastIndex(rest, "@")
	return at >= 0 && strings.ContainsAny(rest[:at], "?#")
}

// postgresURLShape is the shape of a good store.postgres.
const postgresURLShape = "postgres://USER:PASSWORD@HOST:PORT/DB?sslmode=verify-full, " +
	"with characters such as @ : / ? # % in the password percent-encoded (%40 %3A %2F %3F %23 %25)"

const postgresURLHelp = "give " + postgresURLShape

// sslModes are the sslmode values libpq and pgx know.
var sslModes = []string{"disable", "allow", "prefer", "require", "verify-ca", "verify-full"}

// settle applies the SQLite default only when no PostgreSQL key is given,
// and refuses both kinds of store at once. md says which keys the file
// sets.
func (s *Store) settle(md toml.MetaData) error {
	if !s.IsPostgres() {
		return nil
	}
	key := s.Key()
	if s.Postgres != "" && s.PostgresFile != "" {
		return keyError("store.postgres", "set postgres or postgres_file, not both")
	}
	if md.IsDefined("store", "path") {
		return keyError(key, "set path (a SQLite file) or %s (PostgreSQL), not both — remove one", strings.TrimPrefix(key, "store."))
	}
	s.Path = ""
	return nil
}

// validate reads postgres_file and checks the PostgreSQL URL. Nothing it
// says shows the URL's password.
func (s *Store) validate() error {
	if !s.IsPostgres() {
		if s.Path == "" {
			return keyError("store.path", "must not be empty")
		}
		return nil
	}
	key, value := "store.postgres", ""
	if s.PostgresFile != "" {
		key, value = "store.postgres_file", s.PostgresFile
		data, err := ReadSecretFile(key, s.PostgresFile)
		if err != nil {
			return err
		}
		s.Postgres = strings.TrimRight(string(data), "\r\n")
		if s.Postgres == "" {
			return &Error{Key: key, Value: value, Err: errors.New("file is empty"), Fix: "write the database URL in it, on one line: " + postgresURLShape}
		}
	}
	bad := func(what, fix string) error {
		return &Error{Key: key, Value: value, Err: errors.New(what), Fix: fix}
	}
	if strings.ContainsAny(s.Postgres, "\r\n") {
		return bad("the URL spans several lines", "put it on one line")
	}
	u, err := url.Parse(s.Postgres)
	if err != nil {
		// url.Error quotes the whole URL, password and all: not shown.
		return bad("not a URL", postgresURLHelp)
	}
	if ambiguousUserInfo(s.Postgres) || u.Fragment != "" {
		return bad("a ? or # in the user or password is not percent-encoded", postgresURLHelp)
	}
	if u.Scheme != "postgres" && u.Scheme != "postgresql" {
		if u.Scheme == "" {
			return bad("not a URL (no postgres:// in front)", postgresURLHelp)
		}
		return bad("scheme "+u.Scheme+" is not postgres or postgresql", postgresURLHelp)
	}
	if u.Opaque != "" {
		return bad("not a URL (no // after postgres:)", postgresURLHelp)
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return bad("the part after ? does not parse", "write it as ?sslmode=verify-full&connect_timeout=10, each value percent-encoded")
	}
	if mode := q.Get("sslmode"); q.Has("sslmode") && !slices.Contains(sslModes, mode) {
		return bad("sslmode "+strconv.Quote(mode)+" is not one of "+strings.Join(sslModes, ", "),
			"use verify-full (TLS, the server's certificate checked against sslrootcert or the system roots) "+
				"off this machine, disable for a Unix socket or loopback")
	}
	return nil
}
