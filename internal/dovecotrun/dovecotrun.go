// Package dovecotrun runs a real, unmodified Dovecot 2.3 as a throwaway
// instance: its own config, users, mail and log under a short directory in
// /tmp, listening on free 127.0.0.1 ports for IMAP (plain text) and LMTP.
// Mail is delivered over LMTP exactly as an MTA would deliver it.
//
// It is the core of internal/dovecottest (which wraps it for tests) and of
// cmd/xapsbench. The config comes from testdata/dovecot/dovecot.conf.tmpl at
// the module root, found by walking up from the working directory to go.mod
// (TemplatePath), which documents every setting.
//
// Use:
//
//	d, err := dovecotrun.Start(dovecotrun.Options{})
//	if err != nil { ... }
//	defer d.Close() // stops Dovecot and removes its directory
package dovecotrun

import (
	"fmt"
	"maps"
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

	"github.com/xapsproxy/xapsproxy/internal/serverproc"
)

// InstallHint says how to install what Start needs.
const InstallHint = "install it with: apt-get install dovecot-imapd dovecot-lmtpd"

// Error is the type of this package's sentinel errors.
type Error string

func (e Error) Error() string { return string(e) }

// ErrNotInstalled is returned by Start when no Dovecot binary is found.
const ErrNotInstalled = Error("dovecot not found; " + InstallHint)

// Options configures an instance. The zero value is a good default.
type Options struct {
	// Hibernate sets imap_hibernate_timeout to 1s (instead of 0, off), so that
	// IDLE connections idle for more than a second move to imap-hibernate.
	Hibernate bool
	// Users maps user names to passwords; nil means alice:alicepw, bob:bobpw.
	Users map[string]string
	// ExtraConfig is appended to the config (with the template's
	// placeholders, such as @DIR@, filled in), e.g.
	// "login_trusted_networks = 127.0.0.0/8".
	ExtraConfig string
	// Template is the config template file; "" means TemplatePath().
	Template string
	// NoMasterUser leaves the master passdb empty: no master user exists,
	// and every login needs the user's own password (MasterUser and
	// MasterPassword are then "").
	NoMasterUser bool
	// KeepOnFailure keeps the instance directory when Start fails, for
	// inspection; the error names it.
	KeepOnFailure bool
	// RunAs is the account every Dovecot process runs as when we are root;
	// "" means nobody. Per-user limits such as the kernel's inotify
	// instances (fs.inotify.max_user_instances) count per account, so an
	// instance with many sessions can be kept from using up those of the
	// instances the tests run as nobody. Ignored when we are not root.
	RunAs string
}

// Instance is a running Dovecot.
type Instance struct {
	IMAPAddr       string // 127.0.0.1:port
	LMTPAddr       string // 127.0.0.1:port
	Dir            string // instance directory (config, users, mail, log)
	MasterUser     string // log in as "USER*master" with MasterPassword
	MasterPassword string
	User           string // the account every Dovecot process runs as

	usersMu sync.Mutex // guards users and the users file, for SetPassword
	users   map[string]string
	cred    *syscall.Credential   // nil: run as ourselves
	out     serverproc.SyncBuffer // Dovecot's stdout and stderr

	proc serverproc.Process // the master
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

// Version returns the installed Dovecot's version, e.g. "2.3.19.1 (9b53102964)".
func Version() (string, error) {
	bin := binary()
	if bin == "" {
		return "", ErrNotInstalled
	}
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		return "", fmt.Errorf("dovecot --version: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

// Start starts a Dovecot instance and waits until its IMAP and LMTP
// listeners answer. Close stops it and removes its directory. On error
// nothing is left running, and the directory is removed unless
// opts.KeepOnFailure; the error then includes Dovecot's log and output.
func Start(opts Options) (*Instance, error) {
	if !Available() {
		return nil, ErrNotInstalled
	}
	tmplPath := opts.Template
	if tmplPath == "" {
		p, err := TemplatePath()
		if err != nil {
			return nil, err
		}
		tmplPath = p
	}
	tmpl, err := os.ReadFile(tmplPath)
	if err != nil {
		return nil, fmt.Errorf("dovecot template: %w", err)
	}
	userName, groupName, cred, err := identity(opts.RunAs)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("/tmp", "xdc")
	if err != nil {
		return nil, fmt.Errorf("instance directory: %w", err)
	}
	d := &Instance{Dir: dir, User: userName, MasterUser: "master", MasterPassword: "masterpw", users: opts.Users, cred: cred}
	if d.users == nil {
		d.users = map[string]string{"alice": "alicepw", "bob": "bobpw"}
	}
	d.users = maps.Clone(d.users) // SetPassword changes it
	if opts.NoMasterUser {
		d.MasterUser, d.MasterPassword = "", ""
	}
	if err := d.setup(string(tmpl), userName, groupName, opts); err != nil {
		d.Kill()
		if opts.KeepOnFailure {
			return nil, fmt.Errorf("%w\n(instance directory kept: %s)", err, dir)
		}
		os.RemoveAll(dir)
		return nil, err
	}
	return d, nil
}

// setup writes the files and launches Dovecot, retrying with fresh ports.
func (d *Instance) setup(tmpl, userName, groupName string, opts Options) error {
	err := os.Chmod(d.Dir, 0o755)
	if err == nil && d.cred != nil {
		err = os.Chown(d.Dir, int(d.cred.Uid), int(d.cred.Gid))
	}
	if err != nil {
		return fmt.Errorf("instance directory: %w", err)
	}
	if err := d.writeUsers(); err != nil {
		return err
	}
	masters := ""
	if d.MasterUser != "" {
		masters = fmt.Sprintf("%s:{PLAIN}%s\n", d.MasterUser, d.MasterPassword)
	}
	if err := d.writeFile("masters", masters); err != nil {
		return err
	}
	hibernate := "0"
	if opts.Hibernate {
		hibernate = "1s"
	}
	// Free ports are found by listening on :0 and closing again, so another
	// process may grab one before Dovecot binds it: retry with fresh ports.
	for attempt := 1; ; attempt++ {
		ports, err := serverproc.FreePorts(2)
		if err != nil {
			return err
		}
		imapPort, lmtpPort := ports[0], ports[1]
		d.IMAPAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(imapPort))
		d.LMTPAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(lmtpPort))
		r := strings.NewReplacer("@DIR@", d.Dir, "@IMAP_PORT@", strconv.Itoa(imapPort),
			"@LMTP_PORT@", strconv.Itoa(lmtpPort), "@USER@", userName, "@GROUP@", groupName,
			"@HIBERNATE@", hibernate)
		if err := d.writeFile("dovecot.conf", r.Replace(tmpl)+"\n"+r.Replace(opts.ExtraConfig)+"\n"); err != nil {
			return err
		}
		// Create the log ourselves, world-readable, so that the caller can
		// read it even when Dovecot runs as another user.
		if err := d.writeFile("dovecot.log", ""); err != nil {
			return err
		}
		err = d.launch()
		if err == nil {
			return nil
		}
		d.Kill()
		if attempt >= 5 || !strings.Contains(d.Log()+d.out.String(), "Address already in use") {
			return fmt.Errorf("%w\n%s", err, d.Diagnostics())
		}
	}
}

// TemplatePath finds testdata/dovecot/dovecot.conf.tmpl at the module root,
// searching upwards from the working directory (a test's package directory,
// or anywhere inside the repository).
func TemplatePath() (string, error) {
	root, err := ModuleRoot()
	if err != nil {
		return "", fmt.Errorf("dovecot template: %w", err)
	}
	return filepath.Join(root, "testdata", "dovecot", "dovecot.conf.tmpl"), nil
}

// ModuleRoot is the directory holding go.mod, searched upwards from the
// working directory.
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", Error("go.mod not found above the working directory (run from inside the xapsproxy repository)")
		}
		dir = parent
	}
}

// identity returns the account Dovecot runs as: runAs (or nobody) when we
// are root (Dovecot's login and mail processes refuse root), otherwise
// ourselves.
func identity(runAs string) (userName, groupName string, cred *syscall.Credential, err error) {
	root := os.Geteuid() == 0
	u, err := user.Current()
	if err == nil && root {
		if runAs == "" {
			runAs = "nobody"
		}
		u, err = user.Lookup(runAs)
	}
	var g *user.Group
	if err == nil {
		g, err = user.LookupGroupId(u.Gid)
	}
	if err != nil {
		return "", "", nil, fmt.Errorf("dovecot account: %w", err)
	}
	if root {
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	return u.Username, g.Name, cred, nil
}

// writeFile writes DIR/name (mode 0644), owned by Dovecot's account.
func (d *Instance) writeFile(name, content string) error {
	p := filepath.Join(d.Dir, name)
	err := os.WriteFile(p, []byte(content), 0o644)
	if err == nil && d.cred != nil {
		err = os.Chown(p, int(d.cred.Uid), int(d.cred.Gid))
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	return nil
}

// launch starts the master process and waits until both listeners answer.
func (d *Instance) launch() error {
	cmd := exec.Command(binary(), "-F", "-c", filepath.Join(d.Dir, "dovecot.conf"))
	cmd.Dir = d.Dir
	cmd.Stdout, cmd.Stderr = &d.out, &d.out
	if err := d.proc.Start(cmd, d.cred); err != nil {
		return fmt.Errorf("start dovecot: %w", err)
	}
	return d.proc.WaitReady("dovecot", d.IMAPAddr, d.LMTPAddr, 10*time.Second, 5*time.Millisecond)
}
