package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/xapsproxy/xapsproxy/store"
)

// One serve per store: a second one refuses to start and names the first,
// the operator commands work beside it, and a serve killed with SIGKILL
// leaves nothing that stops the next one.
func TestServeHoldsTheStore(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	cfg := f.write()
	db := filepath.Join(f.dir, "xapsproxy.db")
	first := startServe(t, cfg)

	code, stderr := runServe(t, cfg, false)
	checkStartupLine(t, code, stderr, "store.path "+db+": ",
		fmt.Sprintf("in use by another xapsproxy serve (PID %d)", first.pid()), "stop it first")

	// Another process stores a registration; the CLI lists and deletes it.
	st, err := store.Open(t.Context(), db)
	if err != nil {
		t.Fatal(err)
	}
	err = st.Register(t.Context(), store.Registration{User: "alice", DeviceToken: v2Token, AccountID: v2Account,
		Mailboxes: []string{"INBOX"}, Version: 2, Topic: topic, Renewed: time.Now()})
	if cerr := st.Close(); err != nil || cerr != nil {
		t.Fatal(err, cerr)
	}
	if out := runCommand(t, "registrations", "-config", cfg, "list"); !strings.Contains(out, v2Token) || !strings.Contains(out, "1 registrations") {
		t.Errorf("registrations list beside serve:\n%s", out)
	}
	if out := runCommand(t, "registrations", "-config", cfg, "delete", "alice", v2Token); !strings.Contains(out, "deleted") {
		t.Errorf("registrations delete beside serve:\n%s", out)
	}

	first.kill()
	second := startServe(t, cfg)
	if data, err := os.ReadFile(store.LockPath(db)); err != nil || string(data) != strconv.Itoa(second.pid())+"\n" {
		t.Errorf("lock file holds %q, %v; want the PID of the serve started after the crash, %d", data, err, second.pid())
	}
}

// runCommand runs the built binary with args, fails the test unless it
// exits 0, and returns its stdout.
func runCommand(t *testing.T, args ...string) string {
	t.Helper()
	bin := binary(t)
	ctx, cancel := context.WithTimeout(t.Context(), exitTimeout)
	defer cancel()
	var stderr strings.Builder
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("xapsproxy %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr.String())
	}
	return string(out)
}
