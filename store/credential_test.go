package store

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
)

func TestCredentials(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, s Store) {
		ctx := t.Context()
		if _, err := s.Credential(ctx, "alice"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Credential before any: %v, want ErrNotFound", err)
		}
		old, newer := []byte("sealed-old"), []byte("sealed-new")
		if err := s.SetCredential(ctx, "alice", old); err != nil {
			t.Fatal(err)
		}
		if err := s.SetCredential(ctx, "bob", []byte("bob's")); err != nil {
			t.Fatal(err)
		}
		if got, err := s.Credential(ctx, "alice"); err != nil || !bytes.Equal(got, old) {
			t.Fatalf("Credential = %q, %v", got, err)
		}
		if err := s.SetCredential(ctx, "alice", newer); err != nil {
			t.Fatal(err)
		}
		// A refusal of the old one does not drop the newer one.
		if deleted, err := s.DeleteCredential(ctx, "alice", old); err != nil || deleted {
			t.Fatalf("DeleteCredential(old) = %v, %v; want false", deleted, err)
		}
		if got, err := s.Credential(ctx, "alice"); err != nil || !bytes.Equal(got, newer) {
			t.Fatalf("Credential = %q, %v; want the newer one", got, err)
		}
		if deleted, err := s.DeleteCredential(ctx, "alice", newer); err != nil || !deleted {
			t.Fatalf("DeleteCredential(newer) = %v, %v; want true", deleted, err)
		}
		if _, err := s.Credential(ctx, "alice"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Credential after delete: %v", err)
		}
		if got, err := s.Credential(ctx, "bob"); err != nil || string(got) != "bob's" {
			t.Fatalf("bob's credential = %q, %v", got, err)
		}
		for _, bad := range []struct {
			user   string
			sealed []byte
		}{{"", []byte("x")}, {"alice", nil}} {
			if err := s.SetCredential(ctx, bad.user, bad.sealed); !errors.Is(err, errInvalid) {
				t.Errorf("SetCredential(%q, %q) = %v, want errInvalid", bad.user, bad.sealed, err)
			}
		}
	})
}

// A database of schema version 1 (before credentials) gets the credentials
// table and keeps its registrations.
func TestCredentialsMigration(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "v1.db")
	execRaw(t, path, migrations[0]+fmt.Sprintf(`;
		INSERT INTO registrations (user, device_token, account_id, subtopic, mailboxes, version, topic)
		VALUES ('alice', '%s', 'acct', 'com.apple.mobilemail', '["INBOX"]', 2, 'topic');
		PRAGMA user_version = 1; PRAGMA application_id = %d`, tokenA, applicationID))
	s, err := Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if regs, err := s.Registrations(t.Context(), "alice"); err != nil || len(regs) != 1 {
		t.Fatalf("registrations after migration: %+v, %v", regs, err)
	}
	if err := s.SetCredential(t.Context(), "alice", []byte("sealed")); err != nil {
		t.Fatalf("SetCredential after migration: %v", err)
	}
}
