package config

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"syscall"
)

// Error is a problem with the value of one configuration key, worded for
// the operator who has to fix it, on one line:
//
//	key value: what is wrong — what to do
//
// Errors about files named in the configuration (FileError, CertPool) are
// Errors; so are the start-up errors of xapsproxy serve.
type Error struct {
	Key   string // e.g. "proxy.cert_file"
	Value string // shown after the key: a path, or a quoted address; "" = none
	Err   error  // what is wrong
	Fix   string // what to do about it; "" = the problem says it
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.Key)
	if e.Value != "" {
		b.WriteString(" " + e.Value)
	}
	b.WriteString(": " + e.Err.Error())
	if e.Fix != "" {
		b.WriteString(" — " + e.Fix)
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// FileError describes a file that key names and that cannot be read: the
// cause (without the path, which the Error shows once) and the usual fix.
// errors.Is sees through it (fs.ErrNotExist, fs.ErrPermission...).
func FileError(key, path string, err error) *Error {
	e := &Error{Key: key, Value: path, Err: err, Fix: "check " + key}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		e.Err = pe.Err
	}
	switch {
	case errors.Is(err, fs.ErrNotExist):
		e.Fix = "check the path (a relative one is relative to the directory of the configuration file)"
	case errors.Is(err, fs.ErrPermission):
		e.Fix = fmt.Sprintf("make it readable by the user xapsproxy runs as (uid %d)", os.Geteuid())
	case errors.Is(err, syscall.EISDIR):
		e.Fix = "name a file, not a directory"
	}
	return e
}

// ReadFile reads the file that key names; its error is a FileError.
func ReadFile(key, path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, FileError(key, path, err)
	}
	return data, nil
}

// ReadSecretFile is ReadFile for a file holding a secret (the master
// password, the events secret): it also refuses one that others than its
// owner and group may read, write or run, since every local user could
// then take the secret. The mode is that of the file opened, not of a name
// that could be swapped after the check.
func ReadSecretFile(key, path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, FileError(key, path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, FileError(key, path, err)
	}
	if perm := fi.Mode().Perm(); perm&0o007 != 0 {
		return nil, &Error{Key: key, Value: path, Err: fmt.Errorf("is open to others (mode %04o)", perm),
			Fix: "chmod o-rwx " + path + " (every local user could read the secret)"}
	}
	data, err := io.ReadAll(f)
	if err != nil {
		return nil, FileError(key, path, err)
	}
	return data, nil
}
