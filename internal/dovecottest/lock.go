package dovecottest

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// lockInstances takes the lock every test instance holds while it runs:
// shared, or exclusive for Options.Exclusive. It is an flock(2) on a file
// in the temporary directory, so it spans the test processes of every
// package that go test runs at once. It returns the release.
func lockInstances(t testing.TB, exclusive bool) func() {
	t.Helper()
	path := filepath.Join(os.TempDir(), "xapsproxy-dovecottest.lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o666)
	if err != nil {
		t.Fatalf("dovecottest: %v", err)
	}
	how := syscall.LOCK_SH
	if exclusive {
		how = syscall.LOCK_EX
	}
	if err := syscall.Flock(int(f.Fd()), how); err != nil {
		f.Close()
		t.Fatalf("dovecottest: lock %s: %v", path, err)
	}
	return func() { f.Close() } // closing the file releases the lock
}
