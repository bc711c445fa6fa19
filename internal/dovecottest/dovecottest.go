// Package dovecottest runs a real, unmodified Dovecot 2.3 for tests: a
// throwaway instance with its own config, users, mail and log under a short
// directory in /tmp, listening on free 127.0.0.1 ports for IMAP and LMTP.
// Mail is delivered over LMTP exactly as an MTA would deliver it.
//
// The config comes from testdata/dovecot/dovecot.conf.tmpl at the module
// root, which documents every setting. The instance itself is run by
// internal/dovecotrun; this package ties it to a test.
//
// When Dovecot is not installed, Start skips the test. Set
// XAPSPROXY_TEST_DOVECOT=required (as CI should) to make that a failure
// instead. Set XAPSPROXY_KEEP_DOVECOT=1 to keep the instance directory of a
// failed test for inspection.
package dovecottest

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"github.com/xapsproxy/xapsproxy/internal/dovecotrun"
)

const installHint = dovecotrun.InstallHint

// Options configures an instance. The zero value is a good default.
type Options struct {
	// Hibernate sets imap_hibernate_timeout to 1s (instead of 0, off), so that
	// IDLE connections idle for more than a second move to imap-hibernate.
	Hibernate bool
	// Users maps user names to passwords; nil means alice:alicepw, bob:bobpw.
	Users map[string]string
	// Exclusive runs the instance alone: its test holds hundreds of
	// connections, and every test instance runs under one uid, which Linux
	// gives 128 inotify instances; while they are used up, other instances
	// neither see changes at once nor hibernate. Start waits until no other
	// instance runs (in any test process), and others wait for it.
	Exclusive bool
	// ExtraConfig is appended to the config, e.g.
	// "login_trusted_networks = 127.0.0.0/8".
	ExtraConfig string
	// NoMasterUser: no master user exists (MasterUser and MasterPassword
	// are ""); every login needs the user's own password.
	NoMasterUser bool
}

// Dovecot is a running test instance.
type Dovecot struct {
	IMAPAddr       string // 127.0.0.1:port
	LMTPAddr       string // 127.0.0.1:port
	Dir            string // instance directory (config, users, mail, log)
	MasterUser     string // log in as "USER*master" with MasterPassword
	MasterPassword string

	inst     *dovecotrun.Instance
	reported bool // diagnostics already in a t.Fatal message
}

// Available reports whether a Dovecot binary is installed.
func Available() bool { return dovecotrun.Available() }

// Start starts a Dovecot instance that is stopped and removed when the test
// ends. It skips (or fails, see the package doc) when Dovecot is missing.
func Start(t testing.TB, opts Options) *Dovecot {
	t.Helper()
	if !Available() {
		if os.Getenv("XAPSPROXY_TEST_DOVECOT") == "required" {
			t.Fatal("dovecottest: dovecot not found and XAPSPROXY_TEST_DOVECOT=required; " + installHint)
		}
		t.Skip("dovecottest: dovecot not found; " + installHint)
	}
	unlock := lockInstances(t, opts.Exclusive)
	t.Cleanup(unlock) // after the instance's own cleanup, registered below
	inst, err := dovecotrun.Start(dovecotrun.Options{
		Hibernate:     opts.Hibernate,
		Users:         opts.Users,
		ExtraConfig:   opts.ExtraConfig,
		NoMasterUser:  opts.NoMasterUser,
		KeepOnFailure: keep(),
	})
	if err != nil {
		t.Fatalf("dovecottest: %v", err)
	}
	d := &Dovecot{
		IMAPAddr:       inst.IMAPAddr,
		LMTPAddr:       inst.LMTPAddr,
		Dir:            inst.Dir,
		MasterUser:     inst.MasterUser,
		MasterPassword: inst.MasterPassword,
		inst:           inst,
	}
	t.Cleanup(func() { d.cleanup(t) })
	return d
}

func keep() bool { return os.Getenv("XAPSPROXY_KEEP_DOVECOT") == "1" }

// Stop shuts Dovecot down gracefully (SIGTERM, SIGKILL after 5 s).
// Data stays in place for Restart.
func (d *Dovecot) Stop(t testing.TB) {
	t.Helper()
	if err := d.inst.Stop(); err != nil {
		t.Logf("dovecottest: %v", err)
	}
}

// Kill SIGKILLs Dovecot and every process it started, at once, as a crash
// would: sessions end without a goodbye. Data stays in place for Restart.
func (d *Dovecot) Kill(t testing.TB) {
	t.Helper()
	d.inst.Kill()
}

// Restart stops Dovecot if it is running and starts it again on the same
// directory and ports, keeping all mail.
func (d *Dovecot) Restart(t testing.TB) {
	t.Helper()
	d.Stop(t)
	if err := d.inst.Restart(); err != nil {
		d.reported = true
		t.Fatalf("dovecottest: %v", err)
	}
}

func (d *Dovecot) cleanup(t testing.TB) {
	d.inst.Kill()
	if t.Failed() {
		if !d.reported {
			t.Logf("dovecottest: instance %s\n%s", d.Dir, d.inst.Diagnostics())
		}
		if keep() {
			t.Logf("dovecottest: keeping %s (XAPSPROXY_KEEP_DOVECOT=1)", d.Dir)
			return
		}
	}
	if err := d.inst.Close(); err != nil {
		t.Errorf("dovecottest: %v", err)
	}
}

// Password returns the password of a configured user ("" if unknown).
func (d *Dovecot) Password(user string) string { return d.inst.Password(user) }

// SetPassword adds user or changes their password while Dovecot runs; the
// next login is checked against it.
func (d *Dovecot) SetPassword(t testing.TB, user, password string) {
	t.Helper()
	if err := d.inst.SetPassword(user, password); err != nil {
		t.Fatalf("dovecottest: %v", err)
	}
}

// SetMasterPassword changes the master user's password while Dovecot runs
// (MasterPassword follows); it returns once a master login as user works
// with it.
func (d *Dovecot) SetMasterPassword(t testing.TB, user, password string) {
	t.Helper()
	if err := d.inst.SetMasterPassword(user, password); err != nil {
		t.Fatalf("dovecottest: %v", err)
	}
	d.MasterPassword = password
}

// Log returns the contents of Dovecot's log file.
func (d *Dovecot) Log() string { return d.inst.Log() }

// Deliver delivers msg to rcpt (e.g. "alice@example.com") over LMTP, as an
// MTA would: LHLO, MAIL FROM:<sender@example.com>, RCPT TO:<rcpt>, DATA.
// msg should use CRLF line endings. The DATA writer does the dot-stuffing,
// turns any bare LF into CRLF and adds a final CRLF if msg lacks one.
//
// Like any MTA delivery, the stored message gains trace header fields:
// Dovecot prepends Return-Path, Delivered-To and Received. IMAP FETCH BODY[]
// therefore returns those followed by msg; StripTrace of it equals msg
// exactly when msg is CRLF-terminated throughout.
func (d *Dovecot) Deliver(t testing.TB, rcpt string, msg []byte) {
	t.Helper()
	if err := d.inst.Deliver(rcpt, msg); err != nil {
		t.Fatalf("dovecottest: %v", err)
	}
}

// StripTrace returns msg without the leading Return-Path, Delivered-To and
// Received header fields (including folded lines) that delivery prepends.
func StripTrace(msg []byte) []byte {
	for {
		name, _, ok := bytes.Cut(msg, []byte(":"))
		if !ok {
			return msg
		}
		switch strings.ToLower(string(name)) {
		case "return-path", "delivered-to", "received":
		default:
			return msg
		}
		for { // skip the field and its continuation lines
			_, rest, ok := bytes.Cut(msg, []byte("\r\n"))
			if !ok {
				return nil
			}
			msg = rest
			if len(msg) == 0 || (msg[0] != ' ' && msg[0] != '\t') {
				break
			}
		}
	}
}

// Doveadm runs `doveadm -c DIR/dovecot.conf args...` as Dovecot's account
// and returns its standard output, e.g. Doveadm(t, "mailbox", "create",
// "-u", "alice", "Notes").
func (d *Dovecot) Doveadm(t testing.TB, args ...string) string {
	t.Helper()
	out, err := d.inst.Doveadm(args...)
	if err != nil {
		t.Fatalf("dovecottest: %v", err)
	}
	return string(out)
}
