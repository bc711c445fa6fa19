package store

import (
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// umaskDirEnv, when set, makes TestFileModesUnderUmask the child that runs
// with umask 022 and keeps its store there. The umask is the process's, so
// it is changed only in a process of its own.
const umaskDirEnv = "XAPSPROXY_TEST_UMASK_DIR"

// Under the usual umask 022, which would leave files readable by everyone,
// the database, its -wal and -shm files and the lock file are 0600.
func TestFileModesUnderUmask(t *testing.T) {
	if dir := os.Getenv(umaskDirEnv); dir != "" {
		fileModesChild(t, dir)
		return
	}
	t.Parallel()
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestFileModesUnderUmask$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), umaskDirEnv+"="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestFileModesUnderUmask") {
		t.Fatalf("child with umask 022: %v\n%s", err, out)
	}
	t.Logf("child with umask 022:\n%s", out)
	wantModes(t, filepath.Join(dir, "xaps.db"), "", ".lock") // -wal and -shm go with the last close
}

func fileModesChild(t *testing.T, dir string) {
	if old := syscall.Umask(0o022); old != 0o022 {
		t.Logf("umask was %03o", old)
	}
	path := filepath.Join(dir, "xaps.db")
	l, err := Lock(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	s, err := Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	mustRegister(t, s, reg("u", tokenA))
	if err := s.SetMailboxState(t.Context(), "u", "INBOX", MailboxState{UIDValidity: 1, UIDNext: 2}); err != nil {
		t.Fatal(err)
	}
	// A control file made the ordinary way shows that the umask lets
	// everyone read.
	control := filepath.Join(dir, "control")
	if err := os.WriteFile(control, nil, 0o666); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(control); err != nil || fi.Mode().Perm() != 0o644 {
		t.Fatalf("control file: %v, %v; want 0644 under umask 022", fi.Mode().Perm(), err)
	}
	wantModes(t, path, "", "-wal", "-shm", ".lock")
}

// wantModes checks that path+suffix exists with mode 0600 for each suffix.
func wantModes(t *testing.T, path string, suffixes ...string) {
	t.Helper()
	for _, suffix := range suffixes {
		fi, err := os.Stat(path + suffix)
		if err != nil {
			t.Errorf("%s: %v", filepath.Base(path+suffix), err)
			continue
		}
		if got := fi.Mode().Perm(); got != 0o600 {
			t.Errorf("%s: mode %04o, want 0600", filepath.Base(path+suffix), got)
		}
	}
}

// A store that is readable by others (made by an older version, or by
// hand) is restricted to its owner when it is opened, -wal and -shm too.
func TestOpenRestrictsAnExistingStore(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "xaps.db")
	s, err := Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	mustRegister(t, s, reg("u", tokenA)) // the -wal and -shm files exist while s is open
	loose := map[string]fs.FileMode{"": 0o644, "-wal": 0o664, "-shm": 0o666}
	for suffix, mode := range loose {
		if err := os.Chmod(path+suffix, mode); err != nil {
			t.Fatal(err)
		}
		if fi, err := os.Stat(path + suffix); err != nil || fi.Mode().Perm() != mode {
			t.Fatalf("%s: mode %v, %v; want %04o before the test", suffix, fi.Mode().Perm(), err, mode)
		}
	}

	s2, err := Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	wantModes(t, path, "", "-wal", "-shm")
	mustRegister(t, s2, reg("u", tokenB))
	if regs := registrations(t, s, "u"); len(regs) != 2 {
		t.Errorf("%d registrations after restricting, want 2", len(regs))
	}
}
