package dovecotrun

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-smtp"
)

// ErrStopTimeout is returned by Stop when Dovecot ignored SIGTERM for 5 s
// and had to be killed; it is stopped all the same.
const ErrStopTimeout = Error("dovecot ignored SIGTERM for 5s, killing it")

// Kill SIGKILLs the whole process group and waits for the master. Data
// stays in place for Restart.
func (d *Instance) Kill() {
	d.proc.Kill()
}

// Stop shuts Dovecot down gracefully (SIGTERM, SIGKILL after 5 s, then
// ErrStopTimeout). Data stays in place for Restart. Stopping a stopped
// instance does nothing.
func (d *Instance) Stop() error {
	if d.proc.Stop(5 * time.Second) {
		return ErrStopTimeout
	}
	return nil
}

// Restart stops Dovecot if it is running and starts it again on the same
// directory and ports, keeping all mail. A failed start leaves nothing
// running; the error includes Dovecot's log and output.
func (d *Instance) Restart() error {
	d.Stop() // a timeout there ends in a kill: still a clean restart
	if err := d.launch(); err != nil {
		d.Kill()
		return fmt.Errorf("restart: %w\n%s", err, d.Diagnostics())
	}
	return nil
}

// Close stops Dovecot at once (SIGKILL) and removes its directory.
func (d *Instance) Close() error {
	d.Kill()
	if err := os.RemoveAll(d.Dir); err != nil {
		return fmt.Errorf("remove dovecot directory: %w", err)
	}
	return nil
}

// Password returns the password of a configured user ("" if unknown).
func (d *Instance) Password(user string) string {
	d.usersMu.Lock()
	defer d.usersMu.Unlock()
	return d.users[user]
}

// SetPassword adds user or changes their password while Dovecot runs, and
// returns once a login with the new password works: Dovecot's passwd-file
// passdb reads the users file again when its mtime (in seconds) or size has
// changed, at most once a second. The next login is then checked against
// the new password.
func (d *Instance) SetPassword(user, password string) error {
	d.usersMu.Lock()
	d.users[user] = password
	d.usersMu.Unlock()
	if err := d.writeUsers(); err != nil {
		return err
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := tryLogin(d.IMAPAddr, user, password)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("new password of %s not in effect after 5s: %w", user, err)
		}
		time.Sleep(50 * time.Millisecond) // polling interval
	}
}

// tryLogin logs in to addr and out again.
func tryLogin(addr, user, password string) error {
	c, err := imapclient.DialInsecure(addr, nil)
	if err != nil {
		return err
	}
	defer c.Close()
	t := time.AfterFunc(5*time.Second, func() { c.Close() })
	defer t.Stop()
	if err := c.Login(user, password).Wait(); err != nil {
		return err
	}
	return c.Logout().Wait()
}

// writeUsers writes the users file: passdb (PLAIN passwords) and userdb.
// It is replaced by a rename, so Dovecot never reads half of it.
func (d *Instance) writeUsers() error {
	d.usersMu.Lock()
	defer d.usersMu.Unlock()
	var users strings.Builder
	for u, pw := range d.users {
		fmt.Fprintf(&users, "%s:{PLAIN}%s:::::\n", u, pw)
	}
	if err := d.writeFile("users.new", users.String()); err != nil {
		return err
	}
	if err := os.Rename(filepath.Join(d.Dir, "users.new"), filepath.Join(d.Dir, "users")); err != nil {
		return fmt.Errorf("write users: %w", err)
	}
	return nil
}

// Log returns the contents of Dovecot's log file.
func (d *Instance) Log() string {
	b, _ := os.ReadFile(filepath.Join(d.Dir, "dovecot.log"))
	return string(b)
}

// Output returns what Dovecot wrote to its standard output and error.
func (d *Instance) Output() string { return d.out.String() }

// Diagnostics returns the log and the output, labelled, for error reports.
func (d *Instance) Diagnostics() string {
	return "--- " + filepath.Join(d.Dir, "dovecot.log") + ":\n" + d.Log() +
		"--- dovecot stdout/stderr:\n" + d.out.String()
}

// Deliver delivers msg to rcpt (e.g. "alice@example.com") over LMTP, as an
// MTA would: LHLO, MAIL FROM:<sender@example.com>, RCPT TO:<rcpt>, DATA.
// msg should use CRLF line endings. The DATA writer does the dot-stuffing,
// turns any bare LF into CRLF and adds a final CRLF if msg lacks one.
//
// Like any MTA delivery, the stored message gains trace header fields:
// Dovecot prepends Return-Path, Delivered-To and Received.
func (d *Instance) Deliver(rcpt string, msg []byte) error {
	l, err := DialLMTP(d.LMTPAddr)
	if err == nil {
		defer l.Close()
		if err = l.Deliver(msg, rcpt); err == nil {
			err = l.c.Quit()
		}
	}
	if err != nil {
		return fmt.Errorf("LMTP delivery to %s: %w", rcpt, err)
	}
	return nil
}

// LMTP is one LMTP connection kept open, as an MTA keeps one, for
// deliveries one after another (and to several recipients at once).
type LMTP struct {
	c *smtp.Client
}

// DialLMTP connects to addr and says LHLO.
func DialLMTP(addr string) (*LMTP, error) {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, fmt.Errorf("LMTP: %w", err)
	}
	c := smtp.NewClientLMTP(conn)
	c.CommandTimeout, c.SubmissionTimeout = 10*time.Second, 10*time.Second
	if err := c.Hello("localhost"); err != nil {
		c.Close()
		return nil, fmt.Errorf("LMTP: LHLO: %w", err)
	}
	return &LMTP{c: c}, nil
}

// Deliver delivers msg to every rcpt in one transaction, from
// sender@example.com, and returns once the server has answered the end of
// the data for every recipient: then the mail is stored.
func (l *LMTP) Deliver(msg []byte, rcpts ...string) error {
	if err := l.c.SendMail("sender@example.com", rcpts, bytes.NewReader(msg)); err != nil {
		return fmt.Errorf("LMTP delivery to %v: %w", rcpts, err)
	}
	return nil
}

// Close closes the connection (without QUIT).
func (l *LMTP) Close() error { return l.c.Close() }

// Pid is the process ID of Dovecot's master process, 0 when it is not
// running. Every Dovecot process is in its process group.
func (d *Instance) Pid() int {
	return d.proc.Pid()
}

// Doveadm runs `doveadm -c DIR/dovecot.conf args...` as Dovecot's account
// and returns its standard output, e.g. Doveadm("mailbox", "create", "-u",
// "alice", "Notes").
func (d *Instance) Doveadm(args ...string) ([]byte, error) {
	return d.DoveadmInput(nil, args...)
}

// DoveadmInput is Doveadm with stdin, e.g. for `doveadm save -u alice`
// with the message on stdin.
func (d *Instance) DoveadmInput(stdin io.Reader, args ...string) ([]byte, error) {
	cmd := exec.Command("doveadm", append([]string{"-c", filepath.Join(d.Dir, "dovecot.conf")}, args...)...)
	cmd.Dir = d.Dir
	cmd.Stdin = stdin
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: d.cred}
	out, err := cmd.Output()
	if ee, ok := errors.AsType[*exec.ExitError](err); ok {
		err = fmt.Errorf("%w: %s", err, bytes.TrimSpace(ee.Stderr))
	}
	if err != nil {
		return out, fmt.Errorf("doveadm %s: %w", strings.Join(args, " "), err)
	}
	return out, nil
}

// SetMasterPassword changes the master user's password while Dovecot runs
// and returns once a master login as user (one of the configured users)
// works with it. The masters file gets a newer mtime whatever its size, so
// that Dovecot's passwd-file passdb reads it again.
func (d *Instance) SetMasterPassword(user, password string) error {
	if d.MasterUser == "" {
		return errors.New("set master password: no master user")
	}
	d.MasterPassword = password
	p := filepath.Join(d.Dir, "masters")
	old, err := os.Stat(p)
	if err != nil {
		return fmt.Errorf("set master password: %w", err)
	}
	if err := d.writeFile("masters.new", fmt.Sprintf("%s:{PLAIN}%s\n", d.MasterUser, password)); err != nil {
		return err
	}
	mtime := time.Now()
	if later := old.ModTime().Add(time.Second); mtime.Before(later) {
		mtime = later
	}
	if err := os.Chtimes(filepath.Join(d.Dir, "masters.new"), mtime, mtime); err != nil {
		return fmt.Errorf("set master password: %w", err)
	}
	if err := os.Rename(filepath.Join(d.Dir, "masters.new"), p); err != nil {
		return fmt.Errorf("set master password: %w", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := tryLogin(d.IMAPAddr, user+"*"+d.MasterUser, password)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("new master password not in effect after 5s: %w", err)
		}
		time.Sleep(50 * time.Millisecond) // polling interval
	}
}
