package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/xapsproxy/xapsproxy/config"
)

// TestPostgresStoreErrors: each failure to use a PostgreSQL store is one
// line naming the key, with its fix, and without the password however
// the error carried it.
func TestPostgresStoreErrors(t *testing.T) {
	t.Parallel()
	const url = "postgres://xaps:hunter%2F2@db.example.com:5432/pushes?sslmode=verify-full"
	s := config.Store{Postgres: url}
	for _, tt := range []struct {
		name string
		err  error
		want string
	}{
		{"password", &pgconn.PgError{Severity: "FATAL", Code: "28P01", Message: `password authentication failed for user "xaps"`},
			`store.postgres postgres://xaps:xxxxx@db.example.com:5432/pushes?sslmode=verify-full: FATAL: password authentication failed for user "xaps" (SQLSTATE 28P01) — the password in the URL is not xaps's`},
		{"no database", fmt.Errorf("connect: %w", &pgconn.PgError{Severity: "FATAL", Code: "3D000", Message: `database "pushes" does not exist`}),
			"(SQLSTATE 3D000) — create it: createdb -O xaps pushes"},
		{"permission", &pgconn.PgError{Severity: "ERROR", Code: "42501", Message: "permission denied for schema public"},
			"(SQLSTATE 42501) — the role needs to own the database or be granted CREATE and USAGE on it and its schema: ALTER DATABASE pushes OWNER TO xaps, or GRANT ALL ON SCHEMA public TO xaps"},
		{"pg_hba", &pgconn.PgError{Severity: "FATAL", Code: "28000", Message: `no pg_hba.conf entry for host "10.0.0.5", user "xaps", database "pushes", no encryption`},
			"(SQLSTATE 28000) — pg_hba.conf lets no such connection in"},
		{"timeout", fmt.Errorf("open: %w", context.DeadlineExceeded), "context deadline exceeded — no answer from the server in the URL in time"},
		// A wrapper that quoted the URL or the password: still redacted.
		{"wrapped URL", fmt.Errorf("open %s: %w", url, errors.New("boom")), "open postgres://xaps:xxxxx@db.example.com"},
		{"wrapped password", fmt.Errorf("auth hunter/2 hunter%%2F2: %w", errors.New("boom")), "auth xxxxx xxxxx: boom"},
	} {
		msg := postgresError(s, tt.err).Error()
		if !strings.Contains(msg, tt.want) {
			t.Errorf("%s: %q\nwant it to contain %q", tt.name, msg, tt.want)
		}
		if strings.Contains(msg, "hunter") || strings.Contains(msg, "\n") {
			t.Errorf("%s: shows the password or spans lines: %q", tt.name, msg)
		}
	}
	var pgErr *pgconn.PgError
	if err := postgresError(s, fmt.Errorf("x: %w", &pgconn.PgError{Code: "28P01"})); !errors.As(err, &pgErr) {
		t.Errorf("errors.As does not see the PgError through %v", err)
	}
	// postgres_file: the key is the file's, and the file is named.
	f := config.Store{Postgres: url, PostgresFile: "/etc/xapsproxy/pg"}
	if msg := postgresError(f, errors.New("boom")).Error(); !strings.HasPrefix(msg, "store.postgres_file /etc/xapsproxy/pg (postgres://xaps:xxxxx@") {
		t.Errorf("postgres_file: %q", msg)
	}
}

// TestPostgresStoreRefused: a real refused connection (a port nothing
// listens on) names the address and asks whether PostgreSQL runs.
func TestPostgresStoreRefused(t *testing.T) {
	t.Parallel()
	addr := refusedAddr(t)
	url := "postgres://xaps:hunter2@" + addr + "/pushes?sslmode=disable"
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	_, err := pgconn.Connect(ctx, url)
	if err == nil {
		t.Fatal("connected to a closed port")
	}
	msg := postgresError(config.Store{Postgres: url}, err).Error()
	want := "store.postgres postgres://xaps:xxxxx@" + addr + "/pushes?sslmode=disable: connection to " + addr + " refused — is PostgreSQL running"
	if !strings.HasPrefix(msg, want) || strings.Contains(msg, "hunter2") {
		t.Errorf("%q\nwant it to start with %q", msg, want)
	}
}
