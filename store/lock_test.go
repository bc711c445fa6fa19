package store

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

func TestLock(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "xaps.db")
	l, err := Lock(path)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(LockPath(path))
	if err != nil || string(data) != strconv.Itoa(os.Getpid())+"\n" {
		t.Errorf("lock file holds %q, %v; want this process's PID", data, err)
	}
	if fi, err := os.Stat(LockPath(path)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("lock file mode %v, %v; want 0600", fi.Mode().Perm(), err)
	}

	// flock(2) locks belong to an open file, so a second Lock conflicts
	// even in the same process.
	_, err = Lock(path)
	var locked *LockedError
	if !errors.As(err, &locked) || locked.PID != os.Getpid() {
		t.Fatalf("second Lock: %v; want a LockedError with PID %d", err, os.Getpid())
	}
	var pe *fs.PathError
	if !errors.As(err, &pe) || pe.Op != "store: lock" || pe.Path != path {
		t.Errorf("second Lock: %#v is not a *fs.PathError of Lock", err)
	}
	if want := "store: lock " + path + ": in use by another process (PID " + strconv.Itoa(os.Getpid()) + ")"; err.Error() != want {
		t.Errorf("second Lock: %q, want %q", err, want)
	}

	// The store opens beside the lock: only serve takes it.
	s, err := Open(t.Context(), path)
	if err != nil {
		t.Fatalf("Open while locked: %v", err)
	}
	mustRegister(t, s, reg("u", tokenA))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if data, err := os.ReadFile(LockPath(path)); err != nil || len(data) != 0 {
		t.Errorf("lock file after Close holds %q, %v; want it empty", data, err)
	}
	l, err = Lock(path)
	if err != nil {
		t.Fatalf("Lock after Close: %v", err)
	}
	l.Close()
}

// A lock file left with a loose mode (by hand, or another program) is
// restricted to its owner; a PID left in it by a dead process is replaced.
func TestLockExistingFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "xaps.db")
	if err := os.WriteFile(LockPath(path), []byte("999999999\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(LockPath(path), 0o644); err != nil {
		t.Fatal(err)
	}
	l, err := Lock(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if fi, err := os.Stat(LockPath(path)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("lock file mode %v, %v; want 0600", fi.Mode().Perm(), err)
	}
	if data, err := os.ReadFile(LockPath(path)); err != nil || string(data) != strconv.Itoa(os.Getpid())+"\n" {
		t.Errorf("lock file holds %q, %v; want this process's PID alone", data, err)
	}
}

func TestLockErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if _, err := Lock(filepath.Join(dir, "nope", "xaps.db")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing directory: %v; want fs.ErrNotExist", err)
	}
	if _, err := Lock(dir); err == nil {
		t.Errorf("Lock of a directory succeeded")
	}
	if _, err := Lock(""); !errors.Is(err, errInvalid) {
		t.Errorf("empty path: %v", err)
	}
}
