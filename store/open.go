package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// dsnParams configure every connection the database/sql pool opens (a PRAGMA
// run once would only reach the first connection):
//
//   - busy_timeout: wait up to 5s for another writer instead of failing with
//     SQLITE_BUSY; the driver applies it before the other pragmas.
//   - journal_mode(WAL): readers never block the writer and vice versa.
//   - synchronous(FULL): in WAL mode NORMAL may lose the latest commits on
//     power loss; FULL fsyncs the WAL on every commit, which is what "a method
//     that returns nil has committed its change durably" requires. Mailbox
//     state, the outbox and push outcomes are the exception: their batches
//     run with NORMAL (see writeRelaxed).
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
// The database says who uses which device, so it is kept from other users:
// Open creates it with mode 0600, whatever the umask (SQLite gives its -wal
// and -shm files the mode of the database), and takes group and other
// permissions away from an existing xapsproxy database and its -wal and
// -shm files.
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
	abs, err := usablePath(path)
	if err != nil {
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
	// Only now that the file is known to be xapsproxy's: another program's
	// database, named by mistake, keeps its modes.
	if err := restrictFiles(abs); err != nil {
		w.Close()
		return nil, err
	}
	r, err := openPool(ctx, dsn(abs)+"&_query_only=1")
	if err != nil {
		w.Close()
		return nil, err
	}
	// Every write goes through the group commit, which asks for FULL on
	// the batches that must be durable; the others (mailbox state, the
	// outbox, push outcomes) commit without an fsync.
	if _, err := w.ExecContext(ctx, `PRAGMA synchronous = NORMAL`); err != nil {
		r.Close()
		w.Close()
		return nil, err
	}
	s := &SQLite{w: w, r: r, path: abs}
	var newMax, changedMax int64
	if err := r.QueryRowContext(ctx, `SELECT coalesce(max(new_push), 0), coalesce(max(changed_push), 0) FROM mailbox_state`).Scan(&newMax, &changedMax); err != nil {
		r.Close()
		w.Close()
		return nil, fmt.Errorf("read the outbox: %w", err)
	}
	s.lastID.Store(max(newMax, changedMax))
	if err := s.stmts.prepare(ctx, w); err != nil {
		r.Close()
		w.Close()
		return nil, err
	}
	return s, nil
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

// usablePath returns path made absolute, once checkPath has found nothing
// wrong with it.
func usablePath(path string) (string, error) {
	if path == "" {
		return "", fmt.Errorf("%w: empty path", errInvalid)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", err
	}
	return abs, checkPath(abs)
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

// create makes the database file, mode 0600, if it does not exist (SQLite
// would make it 0644 less the umask). A directory the process may not write
// fails here with fs.ErrPermission rather than in SQLite as "unable to open
// database file".
func create(abs string) error {
	f, err := os.OpenFile(abs, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err // Open's error names the path
		}
		return fmt.Errorf("create the database file: %w", err)
	}
	return f.Close()
}

// restrictFiles takes group and other permissions away from the database
// file and from its -wal and -shm files, those that exist.
func restrictFiles(abs string) error {
	for _, p := range []string{abs, abs + "-wal", abs + "-shm"} {
		fi, err := os.Stat(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err == nil {
			err = restrictMode(p, fi.Mode())
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// restrictMode takes group and other permissions away from the file at p,
// whose mode is mode.
func restrictMode(p string, mode fs.FileMode) error {
	perm := mode.Perm()
	if perm&0o077 == 0 {
		return nil
	}
	if err := os.Chmod(p, perm&^0o077); err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return fmt.Errorf("restrict %s (mode %04o) to its owner: %w", filepath.Base(p), perm, err)
	}
	return nil
}

// dsn builds a SQLite URI for an absolute path. The driver splits the DSN at
// the first '?' and SQLite percent-decodes the path, so those characters (and
// '#', which would start a fragment) are escaped.
func dsn(abs string) string {
	return "file:" + escapePath(abs) + "?" + dsnParams
}

// escapePath makes a path safe in a file: URI.
func escapePath(path string) string {
	return strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(path)
}
