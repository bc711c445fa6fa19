package store

import (
	"bufio"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// SchemaVersion is the schema version Open brings a database to.
func SchemaVersion() int { return len(migrations) }

// Info is what Inspect found in a database.
type Info struct {
	Version    int      // the schema version (user_version) it is at
	Users      []string // users with at least one registration, sorted
	Devices    int      // registrations
	MaxDevices int      // the most registrations of one user
}

// Inspect reads the database at path without changing it: it is opened
// read-only and is neither migrated nor locked, so it may run beside a
// serve. It fails if the file does not exist or is not a xapsproxy
// database. At a schema version other than SchemaVersion (older: Open
// migrates it; newer: Open refuses it) it reports the version only, since
// the registrations table may not be as this program knows it.
//
// Its errors are *fs.PathError with Op "store: inspect" and Path path.
func Inspect(ctx context.Context, path string) (Info, error) {
	info, err := inspect(ctx, path)
	if err != nil {
		return Info{}, &fs.PathError{Op: "store: inspect", Path: path, Err: err}
	}
	return info, nil
}

func inspect(ctx context.Context, path string) (Info, error) {
	abs, err := usablePath(path)
	if err != nil {
		return Info{}, err
	}
	if _, err := os.Stat(abs); err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return Info{}, err
	}
	esc := strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(abs)
	db, err := openPool(ctx, "file:"+esc+"?mode=ro&_pragma=busy_timeout(5000)")
	if err != nil {
		return Info{}, err
	}
	defer db.Close()
	tx, err := db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return Info{}, fmt.Errorf("cannot use as a SQLite database: %w", err)
	}
	defer tx.Rollback()
	var info Info
	if info.Version, err = pragmaInt(ctx, tx, "user_version"); err != nil {
		return Info{}, fmt.Errorf("cannot use as a SQLite database: %w", err)
	}
	if err := checkOwner(ctx, tx, info.Version); err != nil {
		return Info{}, err
	}
	if info.Version != len(migrations) {
		return info, nil
	}
	rows, err := tx.QueryContext(ctx, `SELECT user, count(*) FROM registrations GROUP BY user ORDER BY user`)
	if err != nil {
		return Info{}, fmt.Errorf("read the registrations: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var user string
		var n int
		if err := rows.Scan(&user, &n); err != nil {
			return Info{}, fmt.Errorf("read the registrations: %w", err)
		}
		info.Users = append(info.Users, user)
		info.Devices += n
		info.MaxDevices = max(info.MaxDevices, n)
	}
	if err := rows.Err(); err != nil {
		return Info{}, fmt.Errorf("read the registrations: %w", err)
	}
	return info, nil
}

// LockHolder reports whether some process holds the lock of the store at
// path (see Lock) and, if the kernel says, which. It does not take the
// lock, not even for a moment, so it cannot keep a serve from starting:
// it looks the lock file up in /proc/locks. Its error says it cannot tell
// (no /proc/locks); a missing lock file is not held.
func LockHolder(path string) (held bool, pid int, err error) {
	abs, err := usablePath(path)
	if err != nil {
		return false, 0, err
	}
	fi, err := os.Stat(LockPath(abs))
	if errors.Is(err, fs.ErrNotExist) {
		return false, 0, nil
	}
	if err != nil {
		return false, 0, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return false, 0, errors.New("no inode for the lock file")
	}
	f, err := os.Open("/proc/locks")
	if err != nil {
		return false, 0, err
	}
	defer f.Close()
	// "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF": PID, then
	// major:minor:inode, the device numbers in hex.
	dev := uint64(st.Dev) //nolint:unconvert // a uint64 on some platforms only
	want := fmt.Sprintf("%02x:%02x:%d", unix.Major(dev), unix.Minor(dev), st.Ino)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 || fields[1] != "FLOCK" || fields[5] != want {
			continue
		}
		pid, _ := strconv.Atoi(fields[4])
		return true, pid, nil
	}
	return false, 0, sc.Err()
}
