// Package cyrusrun runs a real, unmodified Cyrus IMAP 3 (Debian's
// cyrus-imapd) as a throwaway instance: its own imapd.conf, cyrus.conf,
// mail spool and SASL password database (sasldb) under a short directory in
// /tmp, listening on free 127.0.0.1 ports for IMAP (plain text) and LMTP.
// It is the IMAP server without master users that the tests of watch.auth =
// "captured" run against: every user logs in with their own password.
//
// Users' INBOXes are created at their first login or delivery
// (autocreate). Mail is delivered over LMTP as an MTA would; SetPassword
// changes a user's password while the server runs (saslpasswd2).
//
// Cyrus logs only to syslog, which tests do not read: count what the
// server is sent with a relay in front of it instead.
//
// Use:
//
//	c, err := cyrusrun.Start(cyrusrun.Options{})
//	if err != nil { ... }
//	defer c.Close() // stops Cyrus and removes its directory
package cyrusrun

import (
	"bytes"
	"errors"
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
	"time"

	"github.com/emersion/go-smtp"

	"github.com/xapsproxy/xapsproxy/internal/serverproc"
)

// InstallHint says how to install what Start needs. Debian's cyrus-imapd
// conflicts with dovecot-imapd (both provide imap-server), so beside
// Dovecot its imapd is unpacked from the package instead of installed.
const InstallHint = "install it with: apt-get install cyrus-common sasl2-bin, then either apt-get install cyrus-imapd " +
	"or, beside dovecot-imapd, apt-get download cyrus-imapd && dpkg-deb -x cyrus-imapd_*.deb " + unpackedRoot

// unpackedRoot is where .ci/run unpacks cyrus-imapd beside Dovecot.
const unpackedRoot = "/opt/cyrus-imapd"

// Error is the type of this package's sentinel errors.
type Error string

func (e Error) Error() string { return string(e) }

// ErrNotInstalled is returned by Start when Cyrus or saslpasswd2 is missing.
const ErrNotInstalled = Error("cyrus-imapd or saslpasswd2 not found; " + InstallHint)

// imapdBin is Cyrus's imapd: installed, or unpacked at unpackedRoot; "" if
// neither.
func imapdBin() string {
	for _, p := range []string{"/usr/lib/cyrus/bin/imapd", unpackedRoot + "/usr/lib/cyrus/bin/imapd"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}

const (
	masterBin = "/usr/lib/cyrus/bin/master"
	// realm is the SASL realm of every user: the server's name.
	realm = "cyrusrun"
)

// Options configures an instance. The zero value is a good default.
type Options struct {
	// Users maps user names to passwords; nil means alice:alicepw, bob:bobpw.
	Users map[string]string
	// KeepOnFailure keeps the instance directory when Start fails, for
	// inspection; the error names it.
	KeepOnFailure bool
}

// Instance is a running Cyrus.
type Instance struct {
	IMAPAddr string // 127.0.0.1:port
	LMTPAddr string // 127.0.0.1:port
	Dir      string // instance directory

	userName string                // the account Cyrus runs as
	cred     *syscall.Credential   // nil: run as ourselves
	out      serverproc.SyncBuffer // the master's stdout and stderr

	mu    sync.Mutex // guards users
	users map[string]string
	proc  serverproc.Process // the master
}

// Available reports whether Cyrus and saslpasswd2 are installed.
func Available() bool {
	if imapdBin() == "" {
		return false
	}
	if _, err := os.Stat(masterBin); err != nil {
		return false
	}
	_, err := exec.LookPath("saslpasswd2")
	return err == nil
}

// Start starts a Cyrus instance and waits until its IMAP and LMTP listeners
// answer. Close stops it and removes its directory. On error nothing is
// left running, and the directory is removed unless opts.KeepOnFailure.
func Start(opts Options) (*Instance, error) {
	if !Available() {
		return nil, ErrNotInstalled
	}
	userName, cred, err := identity()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("/tmp", "xcy")
	if err != nil {
		return nil, fmt.Errorf("instance directory: %w", err)
	}
	c := &Instance{Dir: dir, userName: userName, cred: cred, users: map[string]string{}}
	users := opts.Users
	if users == nil {
		users = map[string]string{"alice": "alicepw", "bob": "bobpw"}
	}
	if err := c.setup(users); err != nil {
		c.Kill()
		if opts.KeepOnFailure {
			return nil, fmt.Errorf("%w\n(instance directory kept: %s)", err, dir)
		}
		os.RemoveAll(dir)
		return nil, err
	}
	return c, nil
}

// identity returns the account Cyrus runs as: the cyrus account the
// package made when we are root (Cyrus refuses to run as root), otherwise
// ourselves, named as cyrus_user in imapd.conf.
func identity() (string, *syscall.Credential, error) {
	if os.Geteuid() != 0 {
		u, err := user.Current()
		if err != nil {
			return "", nil, fmt.Errorf("cyrus account: %w", err)
		}
		return u.Username, nil, nil
	}
	u, err := user.Lookup("cyrus")
	if err != nil {
		return "", nil, fmt.Errorf("cyrus account (made by the cyrus-common package): %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return u.Username, &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// setup writes the files and launches Cyrus, retrying with fresh ports.
func (c *Instance) setup(users map[string]string) error {
	for _, sub := range []string{"", "config", "config/socket", "spool", "proc", "lock", "sock"} {
		if err := c.mkdir(sub); err != nil {
			return err
		}
	}
	for u, pw := range users {
		if err := c.SetPassword(u, pw); err != nil {
			return err
		}
	}
	if err := c.writeFile("imapd.conf", c.imapdConf()); err != nil {
		return err
	}
	// Free ports are found by listening on :0 and closing again, so another
	// process may grab one before Cyrus binds it: retry with fresh ports.
	for attempt := 1; ; attempt++ {
		ports, err := serverproc.FreePorts(2)
		if err != nil {
			return err
		}
		imapPort, lmtpPort := ports[0], ports[1]
		c.IMAPAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(imapPort))
		c.LMTPAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(lmtpPort))
		if err := c.writeFile("cyrus.conf", c.cyrusConf()); err != nil {
			return err
		}
		err = c.launch()
		if err == nil {
			return nil
		}
		c.Kill()
		if attempt >= 5 {
			return fmt.Errorf("%w\n--- cyrus master output:\n%s", err, c.out.String())
		}
	}
}

// imapdConf keeps everything under the instance directory. Notes:
// autocreate_quota 0 and autocreate_post create a user's INBOX at their
// first login or delivery; imapidlepoll 1 makes IDLE see new mail within a
// second without the idled daemon; failedloginpause 0 answers a wrong
// password at once (Cyrus's default is 3 s).
func (c *Instance) imapdConf() string {
	d := c.Dir
	return strings.Join([]string{
		"configdirectory: " + d + "/config",
		"defaultpartition: default",
		"partition-default: " + d + "/spool",
		"proc_path: " + d + "/proc",
		"mboxname_lockpath: " + d + "/lock",
		"lmtpsocket: " + d + "/sock/lmtp",
		"idlesocket: " + d + "/sock/idle",
		"notifysocket: " + d + "/sock/notify",
		"cyrus_user: " + c.userName,
		"servername: " + realm,
		"sasl_pwcheck_method: auxprop",
		"sasl_auxprop_plugin: sasldb",
		"sasl_sasldb_path: " + c.sasldb(),
		"sasl_mech_list: PLAIN LOGIN",
		"allowplaintext: yes",
		"autocreate_quota: 0",
		"autocreate_post: yes",
		"unixhierarchysep: yes",
		"altnamespace: yes",
		"imapidlepoll: 1",
		"failedloginpause: 0",
		"",
	}, "\n")
}

// cyrusConf runs the IMAP and LMTP services on the instance's ports; LMTP
// with -a (preauthorized), as a local MTA would use it.
func (c *Instance) cyrusConf() string {
	conf := filepath.Join(c.Dir, "imapd.conf")
	return fmt.Sprintf(`START {
	recover cmd="ctl_cyrusdb -C %[1]s -r"
}
SERVICES {
	imap cmd="%[4]s -C %[1]s" listen="%[2]s" prefork=0
	lmtp cmd="lmtpd -C %[1]s -a" listen="%[3]s" prefork=0
}
EVENTS {
}
`, conf, c.IMAPAddr, c.LMTPAddr, imapdBin())
}

func (c *Instance) sasldb() string { return filepath.Join(c.Dir, "sasldb2") }

// launch starts the master process and waits until both listeners answer.
func (c *Instance) launch() error {
	cmd := exec.Command(masterBin, "-C", filepath.Join(c.Dir, "imapd.conf"), "-M", filepath.Join(c.Dir, "cyrus.conf"),
		"-p", filepath.Join(c.Dir, "master.pid"), "-D")
	cmd.Dir = c.Dir
	cmd.Stdout, cmd.Stderr = &c.out, &c.out
	// The master is started as its account already, so it keeps Pdeathsig
	// (a change of user would clear it).
	if err := c.proc.Start(cmd, c.cred); err != nil {
		return fmt.Errorf("start cyrus: %w", err)
	}
	return c.proc.WaitReady("cyrus master", c.IMAPAddr, c.LMTPAddr, 15*time.Second, 10*time.Millisecond)
}

// SetPassword creates user or changes their password, at once: the
// running server checks the next login against it.
func (c *Instance) SetPassword(name, password string) error {
	// -c creates the database if needed; -p reads the password from
	// standard input, without asking twice.
	cmd := exec.Command("saslpasswd2", "-c", "-p", "-f", c.sasldb(), "-u", realm, name)
	cmd.Stdin = strings.NewReader(password)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("saslpasswd2 %s: %w: %s", name, err, bytes.TrimSpace(out))
	}
	c.mu.Lock()
	c.users[name] = password
	c.mu.Unlock()
	return nil
}

// Password returns the current password of a user ("" if unknown).
func (c *Instance) Password(name string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.users[name]
}

// Deliver delivers msg to rcpt (e.g. "alice@example.com", which Cyrus
// delivers to alice) over LMTP, as an MTA would. msg should use CRLF line
// endings.
func (c *Instance) Deliver(rcpt string, msg []byte) error {
	conn, err := net.DialTimeout("tcp", c.LMTPAddr, 5*time.Second)
	if err == nil {
		lc := smtp.NewClientLMTP(conn)
		defer lc.Close()
		lc.CommandTimeout, lc.SubmissionTimeout = 10*time.Second, 10*time.Second
		if err = lc.Hello("localhost"); err == nil { // LHLO
			err = lc.SendMail("sender@example.com", []string{rcpt}, bytes.NewReader(msg))
		}
		if err == nil {
			err = lc.Quit()
		}
	}
	if err != nil {
		return fmt.Errorf("LMTP delivery to %s: %w", rcpt, err)
	}
	return nil
}

// Kill SIGKILLs the whole process group and waits for the master.
func (c *Instance) Kill() {
	c.proc.Kill()
}

// Stop shuts Cyrus down (SIGTERM, SIGKILL after 5 s).
func (c *Instance) Stop() error {
	if c.proc.Stop(5 * time.Second) {
		return errors.New("cyrus ignored SIGTERM for 5s, killing it")
	}
	return nil
}

// Close stops Cyrus at once and removes its directory.
func (c *Instance) Close() error {
	c.Kill()
	if err := os.RemoveAll(c.Dir); err != nil {
		return fmt.Errorf("remove cyrus directory: %w", err)
	}
	return nil
}

// Output returns what the master wrote to its standard output and error.
func (c *Instance) Output() string { return c.out.String() }

func (c *Instance) mkdir(sub string) error {
	p := filepath.Join(c.Dir, sub)
	err := os.MkdirAll(p, 0o700)
	if err == nil {
		err = os.Chmod(p, 0o700)
	}
	if err == nil && c.cred != nil {
		err = os.Chown(p, int(c.cred.Uid), int(c.cred.Gid))
	}
	if err != nil {
		return fmt.Errorf("cyrus directory %s: %w", sub, err)
	}
	return nil
}

// writeFile writes DIR/name, owned by Cyrus's account.
func (c *Instance) writeFile(name, content string) error {
	p := filepath.Join(c.Dir, name)
	err := os.WriteFile(p, []byte(content), 0o600)
	if err == nil && c.cred != nil {
		err = os.Chown(p, int(c.cred.Uid), int(c.cred.Gid))
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	return nil
}
