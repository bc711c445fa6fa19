package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/xapsproxy/xapsproxy/store"
)

// TestBackupWhileServing copies the store of a running proxy: the copy
// holds the registration the device just made, and an existing file is
// never overwritten.
func TestBackupWhileServing(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	s.start()
	s.connect().loginAndRegister(v2Line, "2")

	dest := filepath.Join(t.TempDir(), "copy.db")
	var out bytes.Buffer
	if err := run(t.Context(), []string{"backup", "-config", s.cfgPath, dest}, &out, &out); err != nil {
		t.Fatalf("backup: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "backed up ") || !strings.Contains(out.String(), dest) {
		t.Errorf("backup said %q", out.String())
	}
	cp, err := store.Open(t.Context(), dest)
	if err != nil {
		t.Fatal(err)
	}
	regs, err := cp.Registrations(t.Context(), "alice")
	cp.Close()
	if err != nil || len(regs) != 1 || regs[0].DeviceToken != v2Token || regs[0].AccountID != v2Account {
		t.Errorf("the copy holds %+v (%v), want alice's registration", regs, err)
	}

	before, _ := os.ReadFile(dest)
	out.Reset()
	if err := run(t.Context(), []string{"backup", "-config", s.cfgPath, dest}, &out, &out); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Errorf("backup over an existing file: %v", err)
	}
	if after, _ := os.ReadFile(dest); !bytes.Equal(before, after) {
		t.Error("a refused backup changed the existing file")
	}
	out.Reset()
	err = run(t.Context(), []string{"backup", "-config", s.cfgPath}, &out, &out)
	if code := exitStatus(err, &out, &out); code != 2 {
		t.Errorf("backup without a file: exit %d, want 2 (%v)", code, err)
	}
}
