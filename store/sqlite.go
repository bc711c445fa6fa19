package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// SQLite is the Store kept in one SQLite database file. It is safe for
// concurrent use.
//
// It holds two pools on the same file. All writes go through w, which has a
// single connection, so concurrent writers queue fairly inside database/sql
// (honouring their contexts) instead of contending for SQLite's write lock:
// SQLite's busy handler polls with back-off and, with 20 writers that each
// fsync, some of them starve past busy_timeout and fail with SQLITE_BUSY.
// busy_timeout still covers other processes using the file. Reads use the r
// pool, which WAL lets run beside the writer; it is opened query_only as a
// guard against writes sneaking past w.
type SQLite struct {
	w     *sql.DB
	r     *sql.DB
	path  string     // absolute
	group group      // writes sharing one transaction; see write
	stmts statements // the hot writes, prepared once
	// lastID is the last outbox id given; it starts at the highest owed.
	lastID atomic.Int64
}

var _ Store = (*SQLite)(nil)

// errInvalid marks an argument the store refuses to record.
var errInvalid = errors.New("invalid argument")

// Close closes the database. Committed changes are already on disk.
func (s *SQLite) Close() error {
	return wrap("close", errors.Join(s.stmts.close(), s.r.Close(), s.w.Close()))
}

// Register inserts or updates the registration for (r.User, r.DeviceToken).
// On update Registered, LastPush and LastPushResult are kept: the first is the
// contract, the other two belong to RecordPush. A new entry with a zero
// Registered gets Renewed as its Registered.
func (s *SQLite) Register(ctx context.Context, r Registration) error {
	return wrap("register", s.register(ctx, r))
}

func (s *SQLite) register(ctx context.Context, r Registration) error {
	r.DeviceToken = NormalizeToken(r.DeviceToken)
	if err := validate(r); err != nil {
		return err
	}
	mailboxes, err := json.Marshal(r.Mailboxes)
	if err != nil {
		return err
	}
	if r.Registered.IsZero() {
		r.Registered = r.Renewed
	}
	times, err := nanos(r.Registered, r.Renewed, r.LastPush)
	if err != nil {
		return err
	}
	// In the group commit: a thousand phones registering at once (after a
	// restart of the mail server, or an import) share transactions.
	return s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		var others int
		if err := tx.QueryRowContext(ctx,
			`SELECT COUNT(*) FROM registrations WHERE user = ? AND device_token <> ?`,
			r.User, r.DeviceToken).Scan(&others); err != nil {
			return err
		}
		if others >= MaxRegistrationsPerUser {
			return ErrLimit
		}
		_, err := tx.ExecContext(ctx, `
		INSERT INTO registrations (user, device_token, account_id, subtopic, mailboxes,
			version, topic, registered, renewed, last_push, last_push_result)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (user, device_token) DO UPDATE SET
			account_id = excluded.account_id,
			subtopic   = excluded.subtopic,
			mailboxes  = excluded.mailboxes,
			version    = excluded.version,
			topic      = excluded.topic,
			renewed    = excluded.renewed`,
			r.User, r.DeviceToken, r.AccountID, r.Subtopic, string(mailboxes),
			r.Version, r.Topic, times[0], times[1], times[2], r.LastPushResult)
		return err
	})
}

func validate(r Registration) error {
	switch {
	case r.User == "":
		return fmt.Errorf("%w: empty user", errInvalid)
	case r.DeviceToken == "":
		return fmt.Errorf("%w: empty device token", errInvalid)
	case len(r.Mailboxes) == 0:
		return fmt.Errorf("%w: no mailboxes", errInvalid)
	}
	for _, m := range r.Mailboxes {
		if m == "" {
			return fmt.Errorf("%w: empty mailbox name", errInvalid)
		}
	}
	return nil
}

const selectRegistrations = `
	SELECT user, device_token, account_id, subtopic, mailboxes, version, topic,
		registered, renewed, last_push, last_push_result
	FROM registrations`

// Registrations returns the registrations of user, ordered by token.
func (s *SQLite) Registrations(ctx context.Context, user string) ([]Registration, error) {
	regs, err := s.query(ctx, selectRegistrations+` WHERE user = ? ORDER BY device_token`, user)
	return regs, wrap("registrations", err)
}

// All returns every registration, ordered by user and token.
func (s *SQLite) All(ctx context.Context) ([]Registration, error) {
	regs, err := s.query(ctx, selectRegistrations+` ORDER BY user, device_token`)
	return regs, wrap("all registrations", err)
}

func (s *SQLite) query(ctx context.Context, q string, args ...any) ([]Registration, error) {
	rows, err := s.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var regs []Registration
	for rows.Next() {
		r, err := scanRegistration(rows)
		if err != nil {
			return nil, err
		}
		regs = append(regs, r)
	}
	return regs, rows.Err()
}

func scanRegistration(rows *sql.Rows) (Registration, error) {
	var (
		r                             Registration
		mailboxes                     string
		registered, renewed, lastPush sql.NullInt64
	)
	err := rows.Scan(&r.User, &r.DeviceToken, &r.AccountID, &r.Subtopic, &mailboxes,
		&r.Version, &r.Topic, &registered, &renewed, &lastPush, &r.LastPushResult)
	if err != nil {
		return r, err
	}
	if err := json.Unmarshal([]byte(mailboxes), &r.Mailboxes); err != nil {
		return r, fmt.Errorf("mailboxes of %s/%s: %w", r.User, r.DeviceToken, err)
	}
	r.Registered, r.Renewed, r.LastPush = fromNanos(registered), fromNanos(renewed), fromNanos(lastPush)
	return r, nil
}

// Users returns every user with at least one registration, sorted.
func (s *SQLite) Users(ctx context.Context) ([]string, error) {
	users, err := queryStrings(ctx, s.r, `SELECT DISTINCT user FROM registrations ORDER BY user`)
	return users, wrap("users", err)
}

// querier is what *sql.DB and *sql.Tx have in common for queryStrings.
type querier interface {
	QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error)
}

// queryStrings runs q, which must select one text column.
func queryStrings(ctx context.Context, db querier, q string, args ...any) ([]string, error) {
	rows, err := db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// Delete removes one registration and reports whether it existed.
func (s *SQLite) Delete(ctx context.Context, user, token string) (bool, error) {
	n, err := s.writeCount(ctx,
		`DELETE FROM registrations WHERE user = ? AND device_token = ?`, user, NormalizeToken(token))
	return n > 0, wrap("delete", err)
}

// DeleteToken removes every registration of token and returns the users that
// had one, sorted.
func (s *SQLite) DeleteToken(ctx context.Context, token string) ([]string, error) {
	users, err := s.deleteToken(ctx, NormalizeToken(token))
	return users, wrap("delete token", err)
}

func (s *SQLite) deleteToken(ctx context.Context, token string) (users []string, err error) {
	// One write transaction, so the users returned are exactly those deleted.
	err = s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		var err error
		users, err = queryStrings(ctx, tx,
			`SELECT DISTINCT user FROM registrations WHERE device_token = ? ORDER BY user`, token)
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM registrations WHERE device_token = ?`, token)
		return err
	})
	if err != nil {
		return nil, err
	}
	return users, nil
}

// writeCount runs one statement as a durable write and returns the rows it
// changed.
func (s *SQLite) writeCount(ctx context.Context, q string, args ...any) (int64, error) {
	var n int64
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, q, args...)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return 0, err // what a first run counted was rolled back
	}
	return n, nil
}

// RecordPush remembers the outcome of the latest push to a registration. It
// returns an error wrapping ErrNotFound if the registration does not exist
// (for instance because DeleteToken removed it first).
func (s *SQLite) RecordPush(ctx context.Context, user, token string, at time.Time, result string) error {
	return wrap("record push", s.recordPush(ctx, user, NormalizeToken(token), at, result))
}

func (s *SQLite) recordPush(ctx context.Context, user, token string, at time.Time, result string) error {
	t, err := nanos(at)
	if err != nil {
		return err
	}
	n, err := s.writeCount(ctx,
		`UPDATE registrations SET last_push = ?, last_push_result = ? WHERE user = ? AND device_token = ?`,
		t[0], result, user, token)
	if err == nil && n == 0 {
		err = ErrNotFound
	}
	return err
}

// MailboxState returns the stored state of one mailbox, or an error wrapping
// ErrNotFound.
func (s *SQLite) MailboxState(ctx context.Context, user, mailbox string) (MailboxState, error) {
	var st MailboxState
	err := s.r.QueryRowContext(ctx,
		`SELECT uid_validity, uid_next FROM mailbox_state WHERE user = ? AND mailbox = ? AND uid_next IS NOT NULL`,
		user, mailbox).Scan(&st.UIDValidity, &st.UIDNext)
	if errors.Is(err, sql.ErrNoRows) {
		err = ErrNotFound
	}
	return st, wrap("mailbox state", err)
}

// SetMailboxState stores the state of one mailbox.
func (s *SQLite) SetMailboxState(ctx context.Context, user, mailbox string, st MailboxState) error {
	_, err := s.commitMailbox(ctx, user, mailbox, &st, nil)
	return wrap("set mailbox state", err)
}

// wrap adds the "store: op:" context to a non-nil error.
func wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("store: %s: %w", op, err)
}

// Ping reports whether the database answers.
func (s *SQLite) Ping(ctx context.Context) error {
	return wrap("ping", s.r.PingContext(ctx))
}
