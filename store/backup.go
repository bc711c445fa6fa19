package store

import (
	"context"
	"errors"
	"fmt"
	"os"
)

// Backup writes a consistent copy of the database to dest, which must not
// exist, while the store stays in use: SQLite's VACUUM INTO reads one
// snapshot (WAL lets writers go on meanwhile) and writes it as a compact
// database without a WAL, so the copy is one self-contained file. dest is
// created with mode 0600, written to disk (fsync) and checked with
// integrity_check before Backup returns; a failed backup removes it.
func (s *SQLite) Backup(ctx context.Context, dest string) error {
	return wrap("backup", s.backup(ctx, dest))
}

func (s *SQLite) backup(ctx context.Context, dest string) (err error) {
	// VACUUM INTO accepts an empty file, so the file and its mode are ours
	// before SQLite writes a byte, and an existing file is never replaced.
	f, err := os.OpenFile(dest, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	f.Close()
	defer func() {
		if err != nil {
			os.Remove(dest)
		}
	}()
	// A connection of its own: the readers are query_only, which VACUUM
	// INTO refuses, and on the writer's one connection every write would
	// wait for the copy. This one only reads the database, beside them.
	db, err := openPool(ctx, dsn(s.path))
	if err != nil {
		return err
	}
	_, err = db.ExecContext(ctx, `VACUUM INTO ?`, dest)
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := syncFile(dest); err != nil {
		return err
	}
	return checkCopy(ctx, dest)
}

func syncFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	return errors.Join(f.Sync(), f.Close())
}

// checkCopy opens the copy read-only and runs integrity_check on it.
func checkCopy(ctx context.Context, path string) error {
	db, err := openPool(ctx, "file:"+escapePath(path)+"?mode=ro")
	if err != nil {
		return err
	}
	defer db.Close()
	var res string
	if err := db.QueryRowContext(ctx, `PRAGMA integrity_check`).Scan(&res); err != nil {
		return fmt.Errorf("check the copy: %w", err)
	}
	if res != "ok" {
		return fmt.Errorf("check the copy: %s", res)
	}
	return nil
}
