package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// pgMigrations is the PostgreSQL schema's history: pgMigrations[i] takes
// the database from version i to i+1 (xapsproxy_schema.version). Append to
// it; never edit a released entry. It is its own history, not SQLite's: the
// two schemas are designed for their engines and numbered apart.
//
// Text that is sorted (users, tokens, mailboxes) is COLLATE "C", so that
// the order is that of the bytes, as Go's and SQLite's, whatever the
// database's locale.
var pgMigrations = []string{
	// 1: registrations, mailbox state with its outbox, credentials.
	`CREATE TABLE registrations (
		user_name        text COLLATE "C" NOT NULL CHECK (user_name <> ''),
		device_token     text COLLATE "C" NOT NULL CHECK (device_token <> '' AND device_token = lower(device_token)),
		account_id       text    NOT NULL,
		subtopic         text    NOT NULL,
		mailboxes        text[]  NOT NULL CHECK (cardinality(mailboxes) > 0), -- in registration order
		version          integer NOT NULL,
		topic            text    NOT NULL,
		registered       timestamptz,
		renewed          timestamptz,
		last_push        timestamptz,
		last_push_result text    NOT NULL DEFAULT '',
		PRIMARY KEY (user_name, device_token)
	);
	CREATE INDEX registrations_token ON registrations (device_token);

	-- The outbox lives in the mailbox's row, as in SQLite: at most one
	-- push of each kind owed, a newer one replacing the older (new id).
	-- uid_validity and uid_next are NULL for a mailbox with a push owed but
	-- never looked at; they are uint32, hence bigint.
	CREATE TABLE mailbox_state (
		user_name    text COLLATE "C" NOT NULL CHECK (user_name <> ''),
		mailbox      text COLLATE "C" NOT NULL CHECK (mailbox <> ''),
		uid_validity bigint CHECK (uid_validity BETWEEN 0 AND 4294967295),
		uid_next     bigint CHECK (uid_next BETWEEN 0 AND 4294967295),
		new_push     bigint,      -- outbox: id of the new-mail push owed, NULL if none
		new_at       timestamptz, -- ... when it was committed
		changed_push bigint,      -- outbox: id of the push owed for changes
		changed_at   timestamptz,
		PRIMARY KEY (user_name, mailbox),
		CHECK ((new_push IS NULL) = (new_at IS NULL)),
		CHECK ((changed_push IS NULL) = (changed_at IS NULL))
	);
	-- Outbox, OutboxOf and Counts read only the rows with a push owed.
	CREATE INDEX mailbox_state_outbox ON mailbox_state (user_name)
		WHERE new_push IS NOT NULL OR changed_push IS NOT NULL;
	-- Outbox ids, shared by every instance using the database.
	CREATE SEQUENCE outbox_id AS bigint;

	-- Captured credentials (watch.auth = "captured"), sealed by package
	-- credential under a key kept outside the database.
	CREATE TABLE credentials (
		user_name text COLLATE "C" NOT NULL PRIMARY KEY CHECK (user_name <> ''),
		sealed    bytea       NOT NULL CHECK (length(sealed) > 0),
		updated   timestamptz NOT NULL
	);`,
}

// Advisory lock keys. The migration lock is a single bigint key; the
// per-user locks use the two-int4 form (class pgUserLockClass, the user's
// hashtext), a separate key space, so the two never collide.
const (
	pgMigrationLock = 0x78617073 // "xaps"
	pgUserLockClass = 0x78617075 // "xapu"
)

// errNewerSchema marks a database migrated by a newer xapsproxy.
var errNewerSchema = errors.New("schema is newer than this program supports")

// pgSchemaVersion is the schema version this program migrates to.
func pgSchemaVersion() int { return len(pgMigrations) }

// pgMigrate brings the schema up to date in one transaction, under an
// advisory lock: instances starting at once on a fresh database take turns,
// and the later ones find the schema done. DDL is transactional in
// PostgreSQL, so a failure leaves the old version whole.
//
// A database already up to date is only read, without the lock: an
// instance may open one whose transactions are read-only (PingWrite then
// says so).
func pgMigrate(ctx context.Context, pool *pgxpool.Pool) error {
	var version int
	err := pool.QueryRow(ctx, `SELECT version FROM xapsproxy_schema`).Scan(&version)
	var pgErr *pgconn.PgError
	switch {
	case errors.As(err, &pgErr) && pgErr.Code == "42P01": // undefined_table: a fresh database
	case errors.Is(err, pgx.ErrNoRows):
	case err != nil:
		return fmt.Errorf("read version: %w", err)
	case version == len(pgMigrations):
		return nil
	case version > len(pgMigrations):
		return fmt.Errorf("%w: version %d, this program knows %d", errNewerSchema, version, len(pgMigrations))
	}
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(pgMigrationLock)); err != nil {
			return fmt.Errorf("migration lock: %w", err)
		}
		if _, err := tx.Exec(ctx, `
			CREATE TABLE IF NOT EXISTS xapsproxy_schema (
				one     boolean PRIMARY KEY DEFAULT true CHECK (one),
				version integer NOT NULL
			)`); err != nil {
			return fmt.Errorf("version table: %w", err)
		}
		var version int
		err := tx.QueryRow(ctx, `SELECT version FROM xapsproxy_schema`).Scan(&version)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("read version: %w", err)
		}
		if version > len(pgMigrations) {
			return fmt.Errorf("%w: version %d, this program knows %d", errNewerSchema, version, len(pgMigrations))
		}
		for i := version; i < len(pgMigrations); i++ {
			if _, err := tx.Exec(ctx, pgMigrations[i]); err != nil {
				return fmt.Errorf("migration %d: %w", i+1, err)
			}
		}
		if version == len(pgMigrations) {
			return nil
		}
		_, err = tx.Exec(ctx, `
			INSERT INTO xapsproxy_schema (version) VALUES ($1)
			ON CONFLICT (one) DO UPDATE SET version = excluded.version`, len(pgMigrations))
		return err
	})
}
