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
//
// flock has no fairness: with tests of several packages starting
// instances one after another, an exclusive waiter could wait until all
// of them are done. So every taker first passes a turnstile (a second
// file, locked exclusively for a moment): an exclusive taker holds it
// while it waits for the instances running now, so no new one starts
// meanwhile, and it waits for those alone.
func lockInstances(t testing.TB, exclusive bool) func() {
	t.Helper()
	dir := os.TempDir()
	turnstile := openLock(t, filepath.Join(dir, "xapsproxy-dovecottest.turnstile"))
	defer turnstile.Close() // released once we hold the instance lock
	flock(t, turnstile, syscall.LOCK_EX)
	f := openLock(t, filepath.Join(dir, "xapsproxy-dovecottest.lock"))
	how := syscall.LOCK_SH
	if exclusive {
		how = syscall.LOCK_EX
	}
	flock(t, f, how)
	return func() { f.Close() } // closing the file releases the lock
}

func openLock(t testing.TB, path string) *os.File {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o666)
	if err != nil {
		t.Fatalf("dovecottest: %v", err)
	}
	return f
}

func flock(t testing.TB, f *os.File, how int) {
	t.Helper()
	for {
		err := syscall.Flock(int(f.Fd()), how)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			f.Close()
			t.Fatalf("dovecottest: lock %s: %v", f.Name(), err)
		}
		return
	}
}
