package dovecotrun_test

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/xapsproxy/xapsproxy/internal/dovecotrun"
)

// The wrapper for tests, internal/dovecottest, covers logins, delivery,
// hibernation and restarts; this checks what only dovecotrun offers.
func TestStartSaveClose(t *testing.T) {
	if !dovecotrun.Available() {
		t.Skip(dovecotrun.ErrNotInstalled)
	}
	v, err := dovecotrun.Version()
	if err != nil || !strings.HasPrefix(v, "2.") {
		t.Errorf("Version() = %q, %v", v, err)
	}
	d, err := dovecotrun.Start(dovecotrun.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	msg := "From: a@example.com\r\nSubject: saved\r\n\r\nbody\r\n"
	if _, err := d.DoveadmInput(strings.NewReader(msg), "save", "-u", "alice"); err != nil {
		t.Fatal(err)
	}
	if err := d.Deliver("alice@example.com", []byte(msg)); err != nil {
		t.Fatal(err)
	}
	out, err := d.Doveadm("-f", "flow", "mailbox", "status", "-u", "alice", "messages", "INBOX")
	if err != nil || !strings.Contains(string(out), "messages=2") {
		t.Errorf("mailbox status = %q, %v; want messages=2", out, err)
	}
	if _, err := d.Doveadm("no-such-command"); err == nil || !strings.Contains(err.Error(), "doveadm no-such-command") {
		t.Errorf("bad doveadm command: err = %v", err)
	}
	if err := d.Stop(); err != nil {
		t.Errorf("Stop: %v", err)
	}
	if err := d.Restart(); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(d.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("directory %s still there after Close: %v", d.Dir, err)
	}
}

func TestBadTemplate(t *testing.T) {
	if !dovecotrun.Available() {
		t.Skip(dovecotrun.ErrNotInstalled)
	}
	tmpl := t.TempDir() + "/bad.tmpl"
	if err := os.WriteFile(tmpl, []byte("no_such_setting = 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := dovecotrun.Start(dovecotrun.Options{Template: tmpl})
	if err == nil || !strings.Contains(err.Error(), "dovecot stdout/stderr") {
		t.Errorf("Start with a bad config: err = %v, want diagnostics", err)
	}
}

// RunAs puts every Dovecot process under another account (when root).
func TestRunAs(t *testing.T) {
	if !dovecotrun.Available() {
		t.Skip(dovecotrun.ErrNotInstalled)
	}
	if os.Geteuid() != 0 {
		t.Skip("only root starts Dovecot as another account")
	}
	u, err := user.Lookup("daemon")
	if err != nil {
		t.Skip("no account daemon:", err)
	}
	d, err := dovecotrun.Start(dovecotrun.Options{RunAs: "daemon"})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.Deliver("alice@example.com", []byte("Subject: x\r\n\r\nbody\r\n")); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(d.Dir, "mail", "alice"))
	if err != nil {
		t.Fatal(err)
	}
	if uid := st.Sys().(*syscall.Stat_t).Uid; d.User != "daemon" || strconv.Itoa(int(uid)) != u.Uid {
		t.Errorf("User %q, mail owned by uid %d; want daemon (%s)", d.User, uid, u.Uid)
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", d.Pid()))
	if err != nil || !strings.Contains(string(status), "\nUid:\t"+u.Uid+"\t") {
		t.Errorf("master process (pid %d) status %q, %v; want Uid %s", d.Pid(), status, err, u.Uid)
	}
}
