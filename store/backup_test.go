package store

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// TestBackupWhileWriting copies the store while registrations keep being
// written: the copy opens as a store of its own, holds every registration
// committed before the backup began, and is mode 0600.
func TestBackupWhileWriting(t *testing.T) {
	dir := t.TempDir()
	st, err := Open(t.Context(), filepath.Join(dir, "x.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	reg := func(user string) Registration {
		return Registration{User: user, DeviceToken: "aa00000000000000000000000000000000000000000000000000000000000000",
			AccountID: "A", Subtopic: "com.apple.mobilemail", Mailboxes: []string{"INBOX"}, Version: 2, Topic: "t", Renewed: time.Now()}
	}
	for i := range 200 {
		if err := st.Register(t.Context(), reg("before"+string(rune('a'+i%26))+string(rune('a'+i/26)))); err != nil {
			t.Fatal(err)
		}
	}
	stop := make(chan struct{})
	var writers sync.WaitGroup
	writers.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if err := st.Register(t.Context(), reg("during"+string(rune('a'+i%26)))); err != nil {
				t.Error(err)
				return
			}
		}
	})
	dest := filepath.Join(dir, "copy.db")
	err = st.Backup(t.Context(), dest)
	close(stop)
	writers.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(dest); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("copy: %v, mode %v; want 0600", err, fi.Mode().Perm())
	}
	cp, err := Open(t.Context(), dest)
	if err != nil {
		t.Fatal(err)
	}
	defer cp.Close()
	users, err := cp.Users(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	before := 0
	for _, u := range users {
		if len(u) > 6 && u[:6] == "before" {
			before++
		}
	}
	if before != 200 {
		t.Errorf("the copy has %d of the 200 users registered before the backup", before)
	}
}

// TestBackupRefusesExisting never overwrites a file, and leaves it as it was.
func TestBackupRefusesExisting(t *testing.T) {
	dir := t.TempDir()
	st, err := Open(t.Context(), filepath.Join(dir, "x.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	dest := filepath.Join(dir, "old.db")
	if err := os.WriteFile(dest, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := st.Backup(t.Context(), dest); !errors.Is(err, fs.ErrExist) {
		t.Errorf("Backup over an existing file = %v, want ErrExist", err)
	}
	if b, _ := os.ReadFile(dest); string(b) != "keep me" {
		t.Errorf("the existing file became %q", b)
	}
}
