package credential

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/xapsproxy/xapsproxy/config"
)

func newTestKey(t *testing.T) *Key {
	t.Helper()
	k, err := LoadKey(filepath.Join(t.TempDir(), "secret.key"))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestSealOpen(t *testing.T) {
	t.Parallel()
	k := newTestKey(t)
	pw := []byte("correct horse battery staple")
	a, err := k.Seal("alice", pw)
	if err != nil {
		t.Fatal(err)
	}
	b, err := k.Seal("alice", pw)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(a, b) {
		t.Error("two seals of one password are equal: the nonce is not random")
	}
	if bytes.Contains(a, pw) {
		t.Error("the sealed value holds the password")
	}
	for _, sealed := range [][]byte{a, b} {
		got, err := k.Open("alice", sealed)
		if err != nil || !bytes.Equal(got, pw) {
			t.Fatalf("Open = %q, %v", got, err)
		}
	}
	// The user is the additional data: alice's row does not open as bob's.
	if _, err := k.Open("bob", a); !errors.Is(err, errSealed) {
		t.Errorf("Open as another user: %v, want errSealed", err)
	}
	// Nor with another key, nor damaged anywhere, nor truncated.
	if _, err := newTestKey(t).Open("alice", a); !errors.Is(err, errSealed) {
		t.Errorf("Open with another key: %v", err)
	}
	for i := range a {
		damaged := bytes.Clone(a)
		damaged[i] ^= 0x01
		if _, err := k.Open("alice", damaged); !errors.Is(err, errSealed) {
			t.Fatalf("Open with byte %d flipped: %v", i, err)
		}
	}
	for _, short := range [][]byte{nil, a[:1], a[:13], a[:len(a)-1]} {
		if _, err := k.Open("alice", short); !errors.Is(err, errSealed) {
			t.Errorf("Open of %d bytes: %v", len(short), err)
		}
	}
	if strings.Contains(errSealed.Error(), string(pw)) {
		t.Error("the error holds the password")
	}
	// An empty password seals too (the store refuses it before that).
	if e, err := k.Seal("alice", nil); err != nil {
		t.Error(err)
	} else if got, err := k.Open("alice", e); err != nil || len(got) != 0 {
		t.Errorf("empty: %q, %v", got, err)
	}
}

func TestLoadKeyCreatesFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "secret.key")
	k1, err := LoadKey(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 || fi.Size() != KeySize {
		t.Fatalf("key file mode %v size %d, want 0600 and %d bytes", fi.Mode(), fi.Size(), KeySize)
	}
	data, _ := os.ReadFile(path)
	if bytes.Equal(data, make([]byte, KeySize)) {
		t.Fatal("the key is all zeros")
	}
	// Loaded again, it is the same key.
	k2, err := LoadKey(path)
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := k1.Seal("alice", []byte("pw"))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := k2.Open("alice", sealed); err != nil || string(got) != "pw" {
		t.Fatalf("reloaded key: %q, %v", got, err)
	}
	// Another new file is another key.
	if _, err := newTestKey(t).Open("alice", sealed); err == nil {
		t.Fatal("two new key files hold the same key")
	}
}

func TestLoadKeyRefuses(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name string, size int, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, bytes.Repeat([]byte{7}, size), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil { // whatever the umask
			t.Fatal(err)
		}
		return p
	}
	link := filepath.Join(dir, "link.key")
	if err := os.Symlink(write("target.key", KeySize, 0o600), link); err != nil {
		t.Fatal(err)
	}
	tests := []struct{ name, path, want string }{
		{"world-readable", write("world.key", KeySize, 0o644), "is open to its group or others (mode 0644) — chmod 600"},
		{"group-readable", write("group.key", KeySize, 0o640), "is open to its group or others (mode 0640) — chmod 600"},
		{"group-writable", write("gw.key", KeySize, 0o620), "is open to its group or others (mode 0620) — chmod 600"},
		{"short", write("short.key", 16, 0o600), "is 16 bytes, not 32 — it must hold exactly 32 random bytes"},
		{"long", write("long.key", 33, 0o600), "is 33 bytes, not 32"},
		{"empty", write("empty.key", 0, 0o600), "is 0 bytes, not 32"},
		{"directory", dir, "is not a regular file"},
		{"missing directory", filepath.Join(dir, "nope", "secret.key"), "its directory does not exist — create " + filepath.Join(dir, "nope")},
		{"symbolic link", link, "is a symbolic link"},
	}
	for _, tt := range tests {
		_, err := LoadKey(tt.path)
		var ce *config.Error
		if !errors.As(err, &ce) || ce.Key != "watch.secret_key_file" {
			t.Errorf("%s: %v, want a config.Error for watch.secret_key_file", tt.name, err)
			continue
		}
		msg := err.Error()
		if !strings.HasPrefix(msg, "watch.secret_key_file "+tt.path+": ") || !strings.Contains(msg, tt.want) || strings.Contains(msg, "\n") {
			t.Errorf("%s: %q, want one line naming the key and containing %q", tt.name, msg, tt.want)
		}
	}
	// A refused file is left as it was.
	if fi, err := os.Stat(filepath.Join(dir, "short.key")); err != nil || fi.Size() != 16 {
		t.Errorf("short.key after LoadKey: %v, %v", fi, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "nope")); !os.IsNotExist(err) {
		t.Errorf("the missing directory was created: %v", err)
	}
}

func TestNewKeySize(t *testing.T) {
	t.Parallel()
	if _, err := NewKey(make([]byte, 16)); err == nil {
		t.Error("NewKey accepted a 16-byte key")
	}
}
