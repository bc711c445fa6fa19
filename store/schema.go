package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"time"
)

// applicationID marks a database file as ours ("xaps" in ASCII), so that Open
// refuses to add tables to some other program's SQLite file.
const applicationID = 0x78617073

// migrations is the ordered schema history: migrations[i] takes the database
// from user_version i to i+1. Append to it; never edit an entry that has been
// released, because existing databases have already run it.
//
// Times are unix nanoseconds (UTC); NULL is the zero time.
var migrations = []string{
	// 1: initial schema.
	`CREATE TABLE registrations (
		user             TEXT    NOT NULL CHECK (user <> ''),
		device_token     TEXT    NOT NULL CHECK (device_token <> '' AND device_token = lower(device_token)),
		account_id       TEXT    NOT NULL,
		subtopic         TEXT    NOT NULL,
		mailboxes        TEXT    NOT NULL, -- JSON array of names, in registration order
		version          INTEGER NOT NULL,
		topic            TEXT    NOT NULL,
		registered       INTEGER,
		renewed          INTEGER,
		last_push        INTEGER,
		last_push_result TEXT    NOT NULL DEFAULT '',
		PRIMARY KEY (user, device_token)
	);
	CREATE INDEX registrations_token ON registrations (device_token);
	CREATE TABLE mailbox_state (
		user         TEXT    NOT NULL,
		mailbox      TEXT    NOT NULL,
		uid_validity INTEGER NOT NULL,
		uid_next     INTEGER NOT NULL,
		PRIMARY KEY (user, mailbox)
	);`,
	// 2: captured credentials (watch.auth = "captured"): per user, the
	// password of their last login through the proxy, sealed by package
	// credential (AES-256-GCM under a key kept outside the database).
	`CREATE TABLE credentials (
		user    TEXT    NOT NULL PRIMARY KEY CHECK (user <> ''),
		sealed  BLOB    NOT NULL CHECK (length(sealed) > 0),
		updated INTEGER NOT NULL
	);`,
	// 3: the outbox: pushes owed, committed with the mailbox state that
	// caused them and cleared once APNs has answered, so that a crash
	// between the two loses no push. It lives in the mailbox's own row
	// (at most one push of each kind owed: a newer event replaces the older,
	// with a new id, since its push covers it), and the table has no rowid:
	// a mail costs one page written, not five (the row, its key's index,
	// an outbox row, its index and an id sequence). uid_validity and
	// uid_next are NULL for a mailbox with a push owed but never looked at.
	`CREATE TABLE mailbox_state3 (
		user         TEXT    NOT NULL CHECK (user <> ''),
		mailbox      TEXT    NOT NULL CHECK (mailbox <> ''),
		uid_validity INTEGER,
		uid_next     INTEGER,
		new_push     INTEGER, -- outbox: id of the new-mail push owed, NULL if none
		new_at       INTEGER, -- ... when it was committed
		changed_push INTEGER, -- outbox: id of the push owed for changes
		changed_at   INTEGER,
		PRIMARY KEY (user, mailbox),
		CHECK ((new_push IS NULL) = (new_at IS NULL)),
		CHECK ((changed_push IS NULL) = (changed_at IS NULL))
	) WITHOUT ROWID;
	INSERT INTO mailbox_state3 (user, mailbox, uid_validity, uid_next)
		SELECT user, mailbox, uid_validity, uid_next FROM mailbox_state WHERE user <> '' AND mailbox <> '';
	DROP TABLE mailbox_state;
	ALTER TABLE mailbox_state3 RENAME TO mailbox_state;`,
}

// errNotOurs reports a database that belongs to something else.
var errNotOurs = errors.New("not a xapsproxy database")

// migrate brings the schema up to date. It runs in one write transaction
// (BEGIN IMMEDIATE, see dsnParams), so two processes opening the same fresh file
// cannot both apply a migration; user_version is transactional, so a crash
// leaves either the old or the new version, never a half-applied one.
func migrate(ctx context.Context, db *sql.DB) (err error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()

	version, err := pragmaInt(ctx, tx, "user_version")
	if err != nil {
		return err
	}
	if err := checkOwner(ctx, tx, version); err != nil {
		return err
	}
	if version > len(migrations) {
		return fmt.Errorf("schema version %d is newer than this program supports (%d)", version, len(migrations))
	}
	for i := version; i < len(migrations); i++ {
		if _, err := tx.ExecContext(ctx, migrations[i]); err != nil {
			return fmt.Errorf("migration %d: %w", i+1, err)
		}
	}
	if version < len(migrations) {
		// PRAGMA arguments cannot be bound parameters; both values are ints.
		q := fmt.Sprintf("PRAGMA user_version = %d; PRAGMA application_id = %d", len(migrations), applicationID)
		if _, err := tx.ExecContext(ctx, q); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// checkOwner refuses a database that another program created: one with
// another application_id, or an unversioned one that already has tables.
func checkOwner(ctx context.Context, tx *sql.Tx, version int) error {
	appID, err := pragmaInt(ctx, tx, "application_id")
	if err != nil {
		return err
	}
	if version == 0 {
		var tables int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_schema`).Scan(&tables); err != nil {
			return err
		}
		if tables == 0 && appID == 0 {
			return nil // a new, empty database
		}
		return fmt.Errorf("%w: no schema version but %d schema objects, application_id %#x", errNotOurs, tables, appID)
	}
	if appID != applicationID {
		return fmt.Errorf("%w: application_id is %#x", errNotOurs, appID)
	}
	return nil
}

func pragmaInt(ctx context.Context, tx *sql.Tx, name string) (int, error) {
	var n int
	if err := tx.QueryRowContext(ctx, "PRAGMA "+name).Scan(&n); err != nil {
		return 0, fmt.Errorf("read %s: %w", name, err)
	}
	return n, nil
}

// Times are stored as unix nanoseconds, which round-trip exactly (as UTC);
// the zero time is NULL because its UnixNano is out of range.
var (
	minTime = time.Unix(0, math.MinInt64)
	maxTime = time.Unix(0, math.MaxInt64)
)

func nanos(ts ...time.Time) ([]sql.NullInt64, error) {
	out := make([]sql.NullInt64, len(ts))
	for i, t := range ts {
		if t.IsZero() {
			continue
		}
		if t.Before(minTime) || t.After(maxTime) {
			return nil, fmt.Errorf("%w: time %v out of range", errInvalid, t)
		}
		out[i] = sql.NullInt64{Int64: t.UnixNano(), Valid: true}
	}
	return out, nil
}

func fromNanos(n sql.NullInt64) time.Time {
	if !n.Valid {
		return time.Time{}
	}
	return time.Unix(0, n.Int64).UTC()
}
