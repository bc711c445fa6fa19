package pgtest_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/xapsproxy/xapsproxy/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// Each New is a fresh, empty database of its own, writable, in UTF-8.
func TestNew(t *testing.T) {
	ctx := context.Background()
	a, b := pgtest.New(t), pgtest.New(t)
	if a == b {
		t.Fatalf("two New gave the same database %s", a)
	}
	ca, err := pgx.Connect(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	defer ca.Close(ctx)
	if _, err := ca.Exec(ctx, `CREATE TABLE x (v text)`); err != nil {
		t.Fatal(err)
	}
	if _, err := ca.Exec(ctx, `INSERT INTO x VALUES ('é')`); err != nil {
		t.Fatal(err)
	}
	var enc string
	if err := ca.QueryRow(ctx, `SHOW server_encoding`).Scan(&enc); err != nil || enc != "UTF8" {
		t.Fatalf("server_encoding = %q, %v; want UTF8", enc, err)
	}

	cb, err := pgx.Connect(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	defer cb.Close(ctx)
	var n int
	if err := cb.QueryRow(ctx, `SELECT count(*) FROM pg_tables WHERE tablename = 'x'`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("table of the other database visible: n = %d, %v", n, err)
	}
}

// The database is dropped at the end of the test, even with a connection
// still open to it.
func TestDropped(t *testing.T) {
	ctx := context.Background()
	var url string
	var conn *pgx.Conn
	t.Run("use", func(t *testing.T) {
		url = pgtest.New(t)
		var err error
		if conn, err = pgx.Connect(ctx, url); err != nil {
			t.Fatal(err)
		}
	})
	defer conn.Close(ctx)
	if _, err := pgx.Connect(ctx, url); err == nil {
		t.Fatalf("database %s still exists after its test", url)
	}
	if err := conn.Ping(ctx); err == nil {
		t.Fatal("connection to the dropped database still works")
	}
}

// A server of the test's own stops (connections fail) and restarts on the
// same port with its data.
func TestStopRestart(t *testing.T) {
	ctx := context.Background()
	s := pgtest.Start(t)
	url := s.New(t)
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `CREATE TABLE kept (v int)`); err != nil {
		t.Fatal(err)
	}
	s.Stop(t)
	if err := conn.Ping(ctx); err == nil {
		t.Fatal("connection works after Stop")
	}
	conn.Close(ctx)
	if c, err := pgx.Connect(ctx, url); err == nil {
		c.Close(ctx)
		t.Fatal("connected after Stop")
	}
	s.Restart(t)
	conn, err = pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect after Restart: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `INSERT INTO kept VALUES (1)`); err != nil {
		t.Fatalf("table lost across Restart: %v", err)
	}
}
