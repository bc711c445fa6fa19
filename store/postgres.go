package store

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Postgres is the Store kept in a PostgreSQL database, which several
// xapsproxy instances may share. It is safe for concurrent use, and its
// invariants (the device limit, one outbox entry per user, mailbox and
// kind, conditional deletes) hold between processes too: each is one
// statement or a transaction under a lock, never a read then a write.
type Postgres struct {
	pool     *pgxpool.Pool
	password string // of the URL, scrubbed from every error
}

var _ Store = (*Postgres)(nil)

// defaultMaxConns is the pool's size unless the URL sets pool_max_conns.
const defaultMaxConns = 16

// OpenPostgres connects to the database at url (a postgres:// URL or a
// key=value string, as libpq takes), brings its schema up to date and
// returns the store. It refuses a database migrated by a newer xapsproxy.
// Its errors never hold the URL's password.
func OpenPostgres(ctx context.Context, url string) (*Postgres, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		// pgx redacts only what it recognizes; say nothing of the URL.
		return nil, &redactedError{msg: "store: open postgres: invalid URL " + redactURL(url), err: err}
	}
	if !strings.Contains(url, "pool_max_conns") {
		// pgx's default, max(4, CPUs), is too few for the hint workers,
		// the pusher's recorder and the cluster's listener together.
		cfg.MaxConns = defaultMaxConns
	}
	p := &Postgres{password: cfg.ConnConfig.Password}
	where := redactURL(url)
	if p.pool, err = pgxpool.NewWithConfig(ctx, cfg); err != nil {
		return nil, p.scrub(fmt.Errorf("store: open postgres %s: %w", where, err))
	}
	if err := p.pool.Ping(ctx); err != nil {
		p.pool.Close()
		return nil, p.scrub(fmt.Errorf("store: open postgres %s: %w", where, err))
	}
	if err := pgMigrate(ctx, p.pool); err != nil {
		p.pool.Close()
		return nil, p.scrub(fmt.Errorf("store: open postgres %s: schema: %w", where, err))
	}
	return p, nil
}

// Pool is the store's connection pool, for what shares the database
// (leases, LISTEN/NOTIFY). Closing the store closes it.
func (p *Postgres) Pool() *pgxpool.Pool { return p.pool }

// Close closes the pool, waiting for the connections in use to return.
func (p *Postgres) Close() error {
	p.pool.Close()
	return nil
}

// redactURL is url with any password masked; a string that is not a URL
// (key=value) is reduced to its host and database settings.
func redactURL(s string) string {
	if strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://") {
		u, err := url.Parse(s)
		if err != nil {
			return "(not shown: it does not parse)"
		}
		q := u.Query()
		for k := range q {
			if strings.Contains(strings.ToLower(k), "password") {
				q.Set(k, "xxxxx")
			}
		}
		u.RawQuery = q.Encode()
		return u.Redacted()
	}
	var kept []string
	for _, f := range strings.Fields(s) {
		k, _, _ := strings.Cut(f, "=")
		if slices.Contains([]string{"host", "port", "dbname", "user"}, k) {
			kept = append(kept, f)
		}
	}
	return "`" + strings.Join(kept, " ") + "`"
}

// redactedError has its own message and keeps err for errors.Is and As
// only: err's text may hold a password.
type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

// scrubbedError is err with the password masked in its text.
type scrubbedError struct {
	password string
	err      error
}

func (e *scrubbedError) Error() string {
	return strings.ReplaceAll(e.err.Error(), e.password, "xxxxx")
}
func (e *scrubbedError) Unwrap() error { return e.err }

// scrub masks the URL's password in err's text, in case pgx put it there
// (a *pgconn.ConnectError names the user and database, not the password,
// but a server's message may echo what it was sent).
func (p *Postgres) scrub(err error) error {
	if err == nil || p.password == "" || !strings.Contains(err.Error(), p.password) {
		return err
	}
	return &scrubbedError{password: p.password, err: err}
}

// wrap is the package's wrap, scrubbed.
func (p *Postgres) wrap(op string, err error) error { return p.scrub(wrap(op, err)) }

// pgMinTime and pgMaxTime bound the times the store takes: the years 1 to
// 9999, well inside timestamptz's range and pgx's encoding of it.
var (
	pgMinTime = time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC)
	pgMaxTime = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)
)

// checkTimes refuses a time out of the range the store keeps.
func checkTimes(ts ...time.Time) error {
	for _, t := range ts {
		if !t.IsZero() && (t.Before(pgMinTime) || !t.Before(pgMaxTime)) {
			return fmt.Errorf("%w: time %v out of range", errInvalid, t)
		}
	}
	return nil
}

// pgTime is t for a timestamptz parameter: NULL for the zero time.
func pgTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t
}

// fromPG is the time read from a timestamptz, in UTC; NULL is zero.
func fromPG(t pgtype.Timestamptz) time.Time {
	if !t.Valid {
		return time.Time{}
	}
	return t.Time.UTC()
}

// Ping reports whether the database answers.
func (p *Postgres) Ping(ctx context.Context) error {
	return p.wrap("ping", p.pool.Ping(ctx))
}

// PingWrite reports whether the store can be written, writing nothing: in a
// transaction it rolls back, it takes the lock writes take on the tables
// (waiting behind a lock that would block them, until ctx expires; it
// also checks the privilege to write them) and checks that the server is
// no standby and the transaction not read-only.
func (p *Postgres) PingWrite(ctx context.Context) error {
	return p.wrap("write check", p.pingWrite(ctx))
}

func (p *Postgres) pingWrite(ctx context.Context) error {
	tx, err := p.pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if _, err := tx.Exec(ctx, `LOCK TABLE registrations, mailbox_state, credentials IN ROW EXCLUSIVE MODE`); err != nil {
		return err
	}
	var recovery bool
	var readOnly string
	if err := tx.QueryRow(ctx, `SELECT pg_is_in_recovery(), current_setting('transaction_read_only')`).Scan(&recovery, &readOnly); err != nil {
		return err
	}
	switch {
	case recovery:
		return errors.New("the server is a standby (in recovery)")
	case readOnly == "on":
		return errors.New("transactions are read-only (default_transaction_read_only)")
	}
	return nil
}

// Counts counts the registrations and the outbox.
func (p *Postgres) Counts(ctx context.Context) (Counts, error) {
	var c Counts
	err := p.pool.QueryRow(ctx,
		`SELECT count(*), count(DISTINCT user_name) FROM registrations`).Scan(&c.Registrations, &c.Users)
	if err == nil {
		err = p.pool.QueryRow(ctx,
			`SELECT count(new_push) + count(changed_push) FROM mailbox_state
			WHERE new_push IS NOT NULL OR changed_push IS NOT NULL`).Scan(&c.Outbox)
	}
	return c, p.wrap("counts", err)
}

// begin runs fn in a transaction, committed if fn returns nil.
func (p *Postgres) begin(ctx context.Context, fn func(pgx.Tx) error) error {
	return pgx.BeginFunc(ctx, p.pool, fn)
}
