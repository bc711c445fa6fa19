package store

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// LockFile is an exclusive hold on the store at one path, for the one
// process that watches its users and pushes (xapsproxy serve); two of them
// on one store would push every mail twice. Other processes may still Open
// the store and read or write it beside the holder.
//
// The hold is an flock(2) on the file <path>.lock (mode 0600), which holds
// the holder's PID. The kernel releases it when the process ends, however
// it ends, so a stale lock file never blocks a restart. The file itself
// stays.
type LockFile struct {
	f *os.File
}

// LockPath is the lock file of the store at path.
func LockPath(path string) string { return path + ".lock" }

// LockedError is Lock's cause when another process holds the lock.
type LockedError struct {
	PID int // the holder's process id; 0 if it has not written it yet
}

func (e *LockedError) Error() string {
	if e.PID == 0 {
		return "in use by another process"
	}
	return fmt.Sprintf("in use by another process (PID %d)", e.PID)
}

// Lock takes the lock of the store at path without waiting. Its errors
// are *fs.PathError with Op "store: lock" and Path path; the cause is a
// *LockedError when another process holds the lock.
func Lock(path string) (*LockFile, error) {
	l, err := lock(path)
	if err != nil {
		return nil, &fs.PathError{Op: "store: lock", Path: path, Err: err}
	}
	return l, nil
}

func lock(path string) (*LockFile, error) {
	abs, err := usablePath(path)
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(LockPath(abs), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, fmt.Errorf("create the lock file: %w", err)
	}
	if err := lockFD(f); err != nil {
		f.Close()
		return nil, err
	}
	return &LockFile{f: f}, nil
}

// lockFD locks f, restricts it to its owner and writes this process's PID.
func lockFD(f *os.File) error {
	err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
	if errors.Is(err, unix.EWOULDBLOCK) {
		return &LockedError{PID: readPID(f)}
	}
	if err != nil {
		return fmt.Errorf("lock %s: %w", f.Name(), err)
	}
	if err := restrict(f); err != nil {
		return err
	}
	if err := f.Truncate(0); err != nil {
		return fmt.Errorf("write %s: %w", f.Name(), err)
	}
	if _, err := f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0); err != nil {
		return fmt.Errorf("write %s: %w", f.Name(), err)
	}
	return nil
}

// restrict takes group and other permissions away from f.
func restrict(f *os.File) error {
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	return restrictMode(f.Name(), fi.Mode())
}

// readPID reads the holder's PID from a lock file, or returns 0.
func readPID(f *os.File) int {
	data, err := io.ReadAll(io.NewSectionReader(f, 0, 32))
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 0 {
		return 0
	}
	return pid
}

// Close releases the lock. The file stays, emptied.
func (l *LockFile) Close() error {
	terr := l.f.Truncate(0)
	return wrap("unlock", errors.Join(terr, l.f.Close()))
}
