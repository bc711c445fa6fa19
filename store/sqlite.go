package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
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
	w *sql.DB
	r *sql.DB
}

var _ Store = (*SQLite)(nil)

// errInvalid marks an argument the store refuses to record.
var errInvalid = errors.New("invalid argument")

// dsnParams configure every connection the database/sql pool opens (a PRAGMA
// run once would only reach the first connection):
//
//   - busy_timeout: wait up to 5s for another writer instead of failing with
//     SQLITE_BUSY; the driver applies it before the other pragmas.
//   - journal_mode(WAL): readers never block the writer and vice versa.
//   - synchronous(FULL): in WAL mode NORMAL may lose the latest commits on
//     power loss; FULL fsyncs the WAL on every commit, which is what "a method
//     that returns nil has committed its change durably" requires.
//   - foreign_keys(1): enforce any constraints later migrations add.
//   - _txlock=immediate: transactions start with BEGIN IMMEDIATE, taking the
//     write lock up front. A deferred transaction that reads and then writes
//     can fail with SQLITE_BUSY without ever calling the busy handler when
//     another connection committed in between.
const dsnParams = "_pragma=busy_timeout(5000)" +
	"&_pragma=journal_mode(WAL)" +
	"&_pragma=synchronous(FULL)" +
	"&_pragma=foreign_keys(1)" +
	"&_txlock=immediate"

// Open opens the database at path, creating the file (but not its directory)
// if needed, and brings its schema up to date. It fails if path is a
// directory, is not a SQLite database, or belongs to another program.
//
// Its errors are *fs.PathError with Op "store: open" and Path path, so that
// a caller can word the cause (errors.As) in its own terms; errors.Is sees
// fs.ErrNotExist for a missing directory and fs.ErrPermission for one it may
// not write.
func Open(ctx context.Context, path string) (*SQLite, error) {
	s, err := open(ctx, path)
	if err != nil {
		return nil, &fs.PathError{Op: "store: open", Path: path, Err: err}
	}
	return s, nil
}

func open(ctx context.Context, path string) (*SQLite, error) {
	if path == "" {
		return nil, fmt.Errorf("%w: empty path", errInvalid)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	if err := checkPath(abs); err != nil {
		return nil, err
	}
	if err := create(abs); err != nil {
		return nil, err
	}
	// The writer goes first: it converts a new file to WAL and migrates it.
	w, err := openPool(ctx, dsn(abs))
	if err != nil {
		return nil, err
	}
	w.SetMaxOpenConns(1)
	if err := migrate(ctx, w); err != nil {
		w.Close()
		return nil, fmt.Errorf("schema: %w", err)
	}
	r, err := openPool(ctx, dsn(abs)+"&_query_only=1")
	if err != nil {
		w.Close()
		return nil, err
	}
	return &SQLite{w: w, r: r}, nil
}

func openPool(ctx context.Context, dsn string) (*sql.DB, error) {
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, err
	}
	// Ping opens a connection, which runs the pragmas and so reads the file
	// header: a file that is not SQLite fails here.
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		if ctx.Err() != nil {
			return nil, err // cancelled: say nothing about the file
		}
		return nil, fmt.Errorf("cannot use as a SQLite database: %w", err)
	}
	return db, nil
}

// checkPath gives clear errors for the mistakes SQLite would only report as
// "unable to open database file".
func checkPath(abs string) error {
	dir := filepath.Dir(abs)
	fi, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return missingDirError{dir}
	}
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", dir)
	}
	fi, err = os.Stat(abs)
	if err == nil && fi.IsDir() {
		return errors.New("is a directory, not a database file")
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// missingDirError says that the directory of a store does not exist.
type missingDirError struct{ dir string }

func (e missingDirError) Error() string        { return "directory " + e.dir + " does not exist" }
func (e missingDirError) Is(target error) bool { return target == fs.ErrNotExist }

// create makes the database file if it does not exist, so that a directory
// the process may not write fails here with fs.ErrPermission rather than in
// SQLite as "unable to open database file".
func create(abs string) error {
	f, err := os.OpenFile(abs, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err // Open's error names the path
		}
		return fmt.Errorf("create the database file: %w", err)
	}
	return f.Close()
}

// dsn builds a SQLite URI for an absolute path. The driver splits the DSN at
// the first '?' and SQLite percent-decodes the path, so those characters (and
// '#', which would start a fragment) are escaped.
func dsn(abs string) string {
	esc := strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(abs)
	return "file:" + esc + "?" + dsnParams
}

// Close closes the database. Committed changes are already on disk.
func (s *SQLite) Close() error {
	return wrap("close", errors.Join(s.r.Close(), s.w.Close()))
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
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback() // after Commit, a no-op
	var others int
	if err := tx.QueryRowContext(ctx,
		`SELECT COUNT(*) FROM registrations WHERE user = ? AND device_token <> ?`,
		r.User, r.DeviceToken).Scan(&others); err != nil {
		return err
	}
	if others >= MaxRegistrationsPerUser {
		return ErrLimit
	}
	_, err = tx.ExecContext(ctx, `
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
	if err != nil {
		return err
	}
	return tx.Commit()
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
	res, err := s.w.ExecContext(ctx,
		`DELETE FROM registrations WHERE user = ? AND device_token = ?`, user, NormalizeToken(token))
	if err != nil {
		return false, wrap("delete", err)
	}
	n, err := res.RowsAffected()
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
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	users, err = queryStrings(ctx, tx,
		`SELECT DISTINCT user FROM registrations WHERE device_token = ? ORDER BY user`, token)
	if err != nil {
		return nil, err
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM registrations WHERE device_token = ?`, token); err != nil {
		return nil, err
	}
	return users, tx.Commit()
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
	res, err := s.w.ExecContext(ctx,
		`UPDATE registrations SET last_push = ?, last_push_result = ? WHERE user = ? AND device_token = ?`,
		t[0], result, user, token)
	if err != nil {
		return err
	}
	n, err := res.RowsAffected()
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
		`SELECT uid_validity, uid_next FROM mailbox_state WHERE user = ? AND mailbox = ?`,
		user, mailbox).Scan(&st.UIDValidity, &st.UIDNext)
	if errors.Is(err, sql.ErrNoRows) {
		err = ErrNotFound
	}
	return st, wrap("mailbox state", err)
}

// SetMailboxState stores the state of one mailbox.
func (s *SQLite) SetMailboxState(ctx context.Context, user, mailbox string, st MailboxState) error {
	if user == "" || mailbox == "" {
		return wrap("set mailbox state", fmt.Errorf("%w: empty user or mailbox", errInvalid))
	}
	_, err := s.w.ExecContext(ctx, `
		INSERT INTO mailbox_state (user, mailbox, uid_validity, uid_next) VALUES (?, ?, ?, ?)
		ON CONFLICT (user, mailbox) DO UPDATE SET
			uid_validity = excluded.uid_validity,
			uid_next     = excluded.uid_next`,
		user, mailbox, st.UIDValidity, st.UIDNext)
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
