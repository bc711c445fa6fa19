package store

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// Inspect reads a store beside its lock holder without changing it.
func TestInspect(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "xaps.db")
	s, err := Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	mustRegister(t, s, reg("alice", "aa01"), reg("alice", "aa02"), reg("bob", "bb01"))
	l, err := Lock(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()

	info, err := Inspect(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	if info.Version != SchemaVersion() || !slices.Equal(info.Users, []string{"alice", "bob"}) || info.Devices != 3 || info.MaxDevices != 2 {
		t.Errorf("Inspect = %+v; want version %d, users alice and bob, 3 devices, at most 2 of one user", info, SchemaVersion())
	}
	held, pid, err := LockHolder(path)
	if err != nil || !held || pid != os.Getpid() {
		t.Errorf("LockHolder = %v, %d, %v; want held by this process (%d)", held, pid, err, os.Getpid())
	}
	l.Close()
	if held, _, err := LockHolder(path); err != nil || held {
		t.Errorf("LockHolder after Close = %v, %v; want not held", held, err)
	}
	if held, _, err := LockHolder(filepath.Join(t.TempDir(), "new.db")); err != nil || held {
		t.Errorf("LockHolder without a lock file = %v, %v; want not held", held, err)
	}
}

func TestInspectOtherSchemas(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "old.db")
	execRaw(t, path, fmt.Sprintf("PRAGMA application_id = %d; PRAGMA user_version = 1", applicationID))
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	info, err := Inspect(t.Context(), path)
	if err != nil || info.Version != 1 {
		t.Fatalf("Inspect = %+v, %v; want version 1", info, err)
	}
	newer := filepath.Join(t.TempDir(), "newer.db")
	execRaw(t, newer, fmt.Sprintf("PRAGMA application_id = %d; PRAGMA user_version = %d", applicationID, SchemaVersion()+1))
	if info, err := Inspect(t.Context(), newer); err != nil || info.Version != SchemaVersion()+1 {
		t.Errorf("Inspect of a newer schema = %+v, %v; want its version", info, err)
	}
	if after, err := os.ReadFile(path); err != nil || string(after) != string(before) {
		t.Errorf("Inspect changed the database file (%v)", err)
	}
}

func TestInspectErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	foreign := filepath.Join(dir, "foreign.db")
	execRaw(t, foreign, "CREATE TABLE other (x)")
	for _, tt := range []struct {
		name, path, want string
		is               error
	}{
		{"missing", filepath.Join(dir, "nope.db"), "no such file", fs.ErrNotExist},
		{"other program's database", foreign, "not a xapsproxy database", errNotOurs},
	} {
		_, err := Inspect(t.Context(), tt.path)
		if err == nil || !strings.HasPrefix(err.Error(), "store: inspect "+tt.path+": ") || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v; want an error naming the path and saying %q", tt.name, err, tt.want)
		}
		if tt.is != nil && !errors.Is(err, tt.is) {
			t.Errorf("%s: %v is not %v", tt.name, err, tt.is)
		}
	}
}
