// Package dovecottest runs a real, unmodified Dovecot 2.3 for tests: a
// throwaway instance with its own config, users, mail and log under a short
// directory in /tmp, listening on free 127.0.0.1 ports for IMAP and LMTP.
// Mail is delivered over LMTP exactly as an MTA would deliver it.
//
// The config comes from testdata/dovecot/dovecot.conf.tmpl at the module
// root, which documents every setting.
//
// When Dovecot is not installed, Start skips the test. Set
// XAPSPROXY_TEST_DOVECOT=required (as CI should) to make that a failure
// instead. Set XAPSPROXY_KEEP_DOVECOT=1 to keep the instance directory of a
// failed test for inspection.
package dovecottest

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

const installHint = "install it with: apt-get install dovecot-imapd dovecot-lmtpd"

// Options configures an instance. The zero value is a good default.
type Options struct {
	// Hibernate sets imap_hibernate_timeout to 1s (instead of 0, off), so that
	// IDLE connections idle for more than a second move to imap-hibernate.
	Hibernate bool
	// Users maps user names to passwords; nil means alice:alicepw, bob:bobpw.
	Users map[string]string
	// ExtraConfig is appended to the config, e.g.
	// "login_trusted_networks = 127.0.0.0/8".
	ExtraConfig string
}

// Dovecot is a running test instance.
type Dovecot struct {
	IMAPAddr       string // 127.0.0.1:port
	LMTPAddr       string // 127.0.0.1:port
	Dir            string // instance directory (config, users, mail, log)
	MasterUser     string // log in as "USER*master" with MasterPassword
	MasterPassword string

	users map[string]string
	cred  *syscall.Credential // nil: run as ourselves
	out   syncBuffer          // Dovecot's stdout and stderr

	reported bool // diagnostics already in a t.Fatal message

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

// Available reports whether a Dovecot binary is installed.
func Available() bool { return binary() != "" }

func binary() string {
	if _, err := os.Stat("/usr/sbin/dovecot"); err == nil {
		return "/usr/sbin/dovecot"
	}
	p, _ := exec.LookPath("dovecot")
	return p
}

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
	tmpl, err := os.ReadFile(templatePath(t))
	if err != nil {
		t.Fatalf("dovecottest: %v", err)
	}
	userName, groupName, cred := identity(t)
	dir, err := os.MkdirTemp("/tmp", "xdc")
	if err != nil {
		t.Fatalf("dovecottest: %v", err)
	}
	d := &Dovecot{Dir: dir, MasterUser: "master", MasterPassword: "masterpw", users: opts.Users, cred: cred}
	if d.users == nil {
		d.users = map[string]string{"alice": "alicepw", "bob": "bobpw"}
	}
	t.Cleanup(func() { d.cleanup(t) })
	err = os.Chmod(dir, 0o755)
	if err == nil && cred != nil {
		err = os.Chown(dir, int(cred.Uid), int(cred.Gid))
	}
	if err != nil {
		t.Fatalf("dovecottest: %v", err)
	}
	var users strings.Builder
	for u, pw := range d.users {
		fmt.Fprintf(&users, "%s:{PLAIN}%s:::::\n", u, pw)
	}
	d.writeFile(t, "users", users.String())
	d.writeFile(t, "masters", fmt.Sprintf("%s:{PLAIN}%s\n", d.MasterUser, d.MasterPassword))
	hibernate := "0"
	if opts.Hibernate {
		hibernate = "1s"
	}
	// Free ports are found by listening on :0 and closing again, so another
	// process may grab one before Dovecot binds it: retry with fresh ports.
	for attempt := 1; ; attempt++ {
		imapPort, lmtpPort := freePort(t), freePort(t)
		d.IMAPAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(imapPort))
		d.LMTPAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(lmtpPort))
		conf := strings.NewReplacer("@DIR@", dir, "@IMAP_PORT@", strconv.Itoa(imapPort),
			"@LMTP_PORT@", strconv.Itoa(lmtpPort), "@USER@", userName, "@GROUP@", groupName,
			"@HIBERNATE@", hibernate).Replace(string(tmpl))
		d.writeFile(t, "dovecot.conf", conf+"\n"+opts.ExtraConfig+"\n")
		// Create the log ourselves, world-readable, so that the test can read
		// it even when Dovecot runs as another user.
		d.writeFile(t, "dovecot.log", "")
		err := d.launch()
		if err == nil {
			return d
		}
		d.kill()
		if attempt >= 5 || !strings.Contains(d.Log()+d.out.String(), "Address already in use") {
			d.fatal(t, err)
		}
	}
}

// templatePath finds testdata/dovecot/dovecot.conf.tmpl at the module root,
// searching upwards from the working directory (a test's package directory).
func templatePath(t testing.TB) string {
	dir, _ := os.Getwd()
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Join(dir, "testdata", "dovecot", "dovecot.conf.tmpl")
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("dovecottest: go.mod not found above the working directory")
		}
		dir = parent
	}
}

// identity returns the account Dovecot runs as: nobody when we are root
// (Dovecot's login and mail processes refuse root), otherwise ourselves.
func identity(t testing.TB) (userName, groupName string, cred *syscall.Credential) {
	root := os.Geteuid() == 0
	u, err := user.Current()
	if err == nil && root {
		u, err = user.Lookup("nobody")
	}
	var g *user.Group
	if err == nil {
		g, err = user.LookupGroupId(u.Gid)
	}
	if err != nil {
		t.Fatalf("dovecottest: %v", err)
	}
	if root {
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	return u.Username, g.Name, cred
}

func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("dovecottest: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// writeFile writes DIR/name (mode 0644), owned by Dovecot's account.
func (d *Dovecot) writeFile(t testing.TB, name, content string) {
	p := filepath.Join(d.Dir, name)
	err := os.WriteFile(p, []byte(content), 0o644)
	if err == nil && d.cred != nil {
		err = os.Chown(p, int(d.cred.Uid), int(d.cred.Gid))
	}
	if err != nil {
		t.Fatalf("dovecottest: %v", err)
	}
}

// launch starts the master process and waits until both listeners answer.
func (d *Dovecot) launch() error {
	cmd := exec.Command(binary(), "-F", "-c", filepath.Join(d.Dir, "dovecot.conf"))
	cmd.Dir = d.Dir
	cmd.Stdout, cmd.Stderr = &d.out, &d.out
	// Own process group, so that kill reaches every Dovecot process. Pdeathsig
	// kills the master if the test binary dies (panic, timeout); its children
	// then exit by themselves.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: d.cred, Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = time.Second // don't hang on output pipes held by stray children
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	d.mu.Lock()
	d.cmd, d.done = cmd, done
	d.mu.Unlock()

	deadline := time.Now().Add(10 * time.Second)
	for {
		err := probe(d.IMAPAddr, "* OK")
		if err == nil {
			err = probe(d.LMTPAddr, "220")
		}
		if err == nil {
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("dovecot exited during startup (%v)", cmd.ProcessState)
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("dovecot not ready after 10s: %v", err)
		}
	}
}

// probe connects to addr and checks that the greeting starts with prefix.
func probe(addr, prefix string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return fmt.Errorf("%s: reading greeting: %w", addr, err)
	}
	if !strings.HasPrefix(line, prefix) {
		return fmt.Errorf("%s: unexpected greeting %q", addr, line)
	}
	return nil
}

// kill SIGKILLs the whole process group and waits for the master.
func (d *Dovecot) kill() {
	d.mu.Lock()
	cmd, done := d.cmd, d.done
	d.cmd = nil
	d.mu.Unlock()
	if cmd == nil {
		return
	}
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	<-done
}

// Stop shuts Dovecot down gracefully (SIGTERM, SIGKILL after 5 s).
// Data stays in place for Restart.
func (d *Dovecot) Stop(t testing.TB) {
	t.Helper()
	d.mu.Lock()
	cmd, done := d.cmd, d.done
	d.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Logf("dovecottest: dovecot ignored SIGTERM for 5s, killing it")
	}
	d.kill() // also reaps any straggling child still holding a listener
}

// Restart stops Dovecot if it is running and starts it again on the same
// directory and ports, keeping all mail.
func (d *Dovecot) Restart(t testing.TB) {
	t.Helper()
	d.Stop(t)
	if err := d.launch(); err != nil {
		d.kill()
		d.fatal(t, fmt.Errorf("restart: %w", err))
	}
}

func (d *Dovecot) cleanup(t testing.TB) {
	d.kill()
	if t.Failed() {
		if !d.reported {
			t.Logf("dovecottest: instance %s\n%s", d.Dir, d.diagnostics())
		}
		if os.Getenv("XAPSPROXY_KEEP_DOVECOT") == "1" {
			t.Logf("dovecottest: keeping %s (XAPSPROXY_KEEP_DOVECOT=1)", d.Dir)
			return
		}
	}
	if err := os.RemoveAll(d.Dir); err != nil {
		t.Errorf("dovecottest: %v", err)
	}
}

// fatal fails the test with err, Dovecot's log and its output.
func (d *Dovecot) fatal(t testing.TB, err error) {
	t.Helper()
	d.reported = true
	t.Fatalf("dovecottest: %v\n%s", err, d.diagnostics())
}

func (d *Dovecot) diagnostics() string {
	return "--- " + filepath.Join(d.Dir, "dovecot.log") + ":\n" + d.Log() +
		"--- dovecot stdout/stderr:\n" + d.out.String()
}

// Password returns the password of a configured user ("" if unknown).
func (d *Dovecot) Password(user string) string { return d.users[user] }

// Log returns the contents of Dovecot's log file.
func (d *Dovecot) Log() string {
	b, _ := os.ReadFile(filepath.Join(d.Dir, "dovecot.log"))
	return string(b)
}

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
	conn, err := net.DialTimeout("tcp", d.LMTPAddr, 5*time.Second)
	if err == nil {
		c := smtp.NewClientLMTP(conn)
		defer c.Close()
		c.CommandTimeout, c.SubmissionTimeout = 10*time.Second, 10*time.Second
		if err = c.Hello("localhost"); err == nil { // LHLO
			err = c.SendMail("sender@example.com", []string{rcpt}, bytes.NewReader(msg))
		}
		if err == nil {
			err = c.Quit()
		}
	}
	if err != nil {
		t.Fatalf("dovecottest: LMTP delivery to %s: %v", rcpt, err)
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
	cmd := exec.Command("doveadm", append([]string{"-c", filepath.Join(d.Dir, "dovecot.conf")}, args...)...)
	cmd.Dir = d.Dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: d.cred}
	out, err := cmd.Output()
	if ee, ok := err.(*exec.ExitError); ok {
		err = fmt.Errorf("%v: %s", err, bytes.TrimSpace(ee.Stderr))
	}
	if err != nil {
		t.Fatalf("dovecottest: doveadm %s: %v", strings.Join(args, " "), err)
	}
	return string(out)
}

// syncBuffer is a bytes.Buffer safe for concurrent use.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
