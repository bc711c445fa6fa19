package main

// Start-up failures of the built binary: each is one line on stderr naming
// the configuration key and the fix, and exit status 1.

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/xapsproxy/xapsproxy/internal/testpki"
)

// fixture is a valid serve configuration in its own directory, with every
// file it names. A test breaks one thing and writes it.
type fixture struct {
	t    *testing.T
	dir  string
	ca   *testpki.CA
	keys map[string]string // "section.key" -> TOML value
}

// fixtureSections is the order sections are written in.
var fixtureSections = []string{"proxy", "backend", "watch", "apns", "store", "admin", "events", "log"}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	dir := t.TempDir()
	ca := testpki.NewCA(t)
	certFile, keyFile := testpki.WritePEM(t, dir, "proxy", ca.ServerCert(t, "localhost"))
	apns := testpki.WriteCombinedPEM(t, dir, "apns", ca.ClientCert(t, topic))
	f := &fixture{t: t, dir: dir, ca: ca, keys: map[string]string{}}
	f.set("proxy.listen_tls", "127.0.0.1:0")
	f.set("proxy.cert_file", certFile)
	f.set("proxy.key_file", keyFile)
	f.set("backend.address", "127.0.0.1:1") // never dialled: nobody registers
	f.set("watch.master_user", "master")
	f.set("watch.master_password", "masterpw")
	f.set("apns.certificate_file", apns)
	f.set("apns.endpoint", "https://127.0.0.1:1") // never called: nobody registers
	f.set("store.path", "xapsproxy.db")
	f.set("admin.listen", "")
	return f
}

// captured switches the fixture to auth = "captured", without a master
// user.
func (f *fixture) captured() {
	f.set("watch.auth", "captured")
	delete(f.keys, "watch.master_user")
	delete(f.keys, "watch.master_password")
}

// set sets a key to a string value.
func (f *fixture) set(key, value string) { f.keys[key] = fmt.Sprintf("%q", value) }

// file writes data to name in the fixture's directory and returns its path.
func (f *fixture) file(name string, data []byte) string {
	f.t.Helper()
	path := filepath.Join(f.dir, name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		f.t.Fatal(err)
	}
	return path
}

// write writes the configuration and returns its path.
func (f *fixture) write() string {
	f.t.Helper()
	var b strings.Builder
	for _, section := range fixtureSections {
		fmt.Fprintf(&b, "[%s]\n", section)
		var lines []string
		for k, v := range f.keys {
			if s, key, _ := strings.Cut(k, "."); s == section {
				lines = append(lines, key+" = "+v)
			}
		}
		slices.Sort(lines)
		b.WriteString(strings.Join(lines, "\n") + "\n\n")
	}
	return f.file("xapsproxy.toml", []byte(b.String()))
}

// busyAddr returns a loopback address that a listener of the test holds
// until the test ends.
func busyAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.Addr().String()
}

// giveToNobody makes the fixture readable and writable by nobody, who runs
// the child when the test runs as root.
func (f *fixture) giveToNobody() {
	f.t.Helper()
	if os.Geteuid() != 0 {
		return
	}
	// t.TempDir's parent is the test's own directory: let nobody through.
	if err := os.Chmod(filepath.Dir(f.dir), 0o711); err != nil {
		f.t.Fatal(err)
	}
	err := filepath.WalkDir(f.dir, func(path string, _ os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(path, nobodyID, nobodyID)
	})
	if err != nil {
		f.t.Fatal(err)
	}
}

// startupCase is one broken configuration and what its error must say.
type startupCase struct {
	name string
	// breakIt breaks the fixture; it returns the path given to -config
	// ("" = the fixture's own).
	breakIt      func(f *fixture) string
	unprivileged bool     // run the child without root's privileges
	wants        []string // in the line, besides "xapsproxy: " and " — "
}

func startupCases() []startupCase {
	return []startupCase{
		{name: "config file missing", wants: []string{"-config", "nope.toml", "no such file", "config.example.toml"},
			breakIt: func(f *fixture) string { return filepath.Join(f.dir, "nope.toml") }},
		{name: "unknown key", wants: []string{"proxy.lissen_tls", "unknown key", "config.example.toml"},
			breakIt: func(f *fixture) string { f.set("proxy.lissen_tls", ":993"); return "" }},
		{name: "invalid value", wants: []string{"backend.address", "not host:port", "e.g."},
			breakIt: func(f *fixture) string { f.set("backend.address", "localhost"); return "" }},
		{name: "master password file missing", wants: []string{"watch.master_password_file", "no such file", "check the path"},
			breakIt: func(f *fixture) string {
				delete(f.keys, "watch.master_password")
				f.set("watch.master_password_file", "nope")
				return ""
			}},
		{name: "captured: key file readable by others", wants: []string{"watch.secret_key_file", "secret.key", "is open to its group or others (mode 0644)", "chmod 600"},
			breakIt: func(f *fixture) string {
				f.captured()
				key := f.file("secret.key", make([]byte, 32))
				if err := os.Chmod(key, 0o644); err != nil {
					f.t.Fatal(err)
				}
				return ""
			}},
		{name: "captured: key file of the wrong size", wants: []string{"watch.secret_key_file", "is 5 bytes, not 32", "32 random bytes"},
			breakIt: func(f *fixture) string { f.captured(); f.file("secret.key", []byte("short")); return "" }},
		{name: "captured: key file directory missing", wants: []string{"watch.secret_key_file", "its directory does not exist", "create"},
			breakIt: func(f *fixture) string { f.captured(); f.set("watch.secret_key_file", "nope/secret.key"); return "" }},
		{name: "APNs certificate missing", wants: []string{"apns.certificate_file", "apns.pem", "no such file", "check the path"},
			breakIt: func(f *fixture) string { os.Remove(filepath.Join(f.dir, "apns.pem")); return "" }},
		{name: "APNs certificate expired", wants: []string{"apns.certificate_file", "expired on", "renew it"},
			breakIt: func(f *fixture) string {
				f.set("apns.certificate_file", testpki.WriteCombinedPEM(f.t, f.dir, "expired", f.ca.ClientCert(f.t, topic, testpki.Expired())))
				return ""
			}},
		{name: "APNs certificate not a certificate", wants: []string{"apns.certificate_file", "junk.pem", "neither PEM nor PKCS#12", "as Apple issued it"},
			breakIt: func(f *fixture) string { f.set("apns.certificate_file", f.file("junk.pem", []byte("junk"))); return "" }},
		{name: "APNs CA file missing", wants: []string{"apns.ca_file", "no such file", "check the path"},
			breakIt: func(f *fixture) string { f.set("apns.ca_file", "nope.pem"); return "" }},
		{name: "proxy certificate missing", wants: []string{"proxy.cert_file", "proxy.crt", "no such file", "check the path"},
			breakIt: func(f *fixture) string { os.Remove(filepath.Join(f.dir, "proxy.crt")); return "" }},
		{name: "proxy certificate not PEM", wants: []string{"proxy.cert_file", "no PEM certificate", "fullchain.pem"},
			breakIt: func(f *fixture) string { f.set("proxy.cert_file", f.file("junk.crt", []byte("junk"))); return "" }},
		{name: "proxy key missing", wants: []string{"proxy.key_file", "proxy.key", "no such file", "check the path"},
			breakIt: func(f *fixture) string { os.Remove(filepath.Join(f.dir, "proxy.key")); return "" }},
		{name: "proxy key of another certificate", wants: []string{"proxy.key_file", "does not match", "proxy.cert_file"},
			breakIt: func(f *fixture) string {
				_, other := testpki.WritePEM(f.t, f.dir, "other", f.ca.ServerCert(f.t, "localhost"))
				f.set("proxy.key_file", other)
				return ""
			}},
		{name: "backend CA file missing", wants: []string{"backend.ca_file", "no such file", "check the path"},
			breakIt: func(f *fixture) string {
				f.set("backend.tls", "implicit")
				f.set("backend.ca_file", "nope.pem")
				return ""
			}},
		{name: "backend CA file without certificates", wants: []string{"backend.ca_file", "no PEM certificates", "CA"},
			breakIt: func(f *fixture) string {
				f.set("backend.tls", "implicit")
				f.set("backend.ca_file", f.file("junk-ca.pem", []byte("junk")))
				return ""
			}},
		{name: "store directory missing", wants: []string{"store.path", "directory", "does not exist", "mkdir -p"},
			breakIt: func(f *fixture) string { f.set("store.path", "nope/xapsproxy.db"); return "" }},
		{name: "store path is a directory", wants: []string{"store.path", "is a directory", "file"},
			breakIt: func(f *fixture) string {
				os.Mkdir(filepath.Join(f.dir, "adir"), 0o700)
				f.set("store.path", "adir")
				return ""
			}},
		{name: "store not a database", wants: []string{"store.path", "not a database", "xapsproxy's own database"},
			breakIt: func(f *fixture) string {
				f.set("store.path", f.file("junk.db", []byte(strings.Repeat("junk", 100))))
				return ""
			}},
		{name: "store directory not writable", unprivileged: true, wants: []string{"store.path", "permission denied", "write"},
			breakIt: func(f *fixture) string {
				ro := filepath.Join(f.dir, "ro")
				if err := os.Mkdir(ro, 0o555); err != nil {
					f.t.Fatal(err)
				}
				f.set("store.path", filepath.Join(ro, "xapsproxy.db"))
				return ""
			}},
		{name: "STARTTLS address in use", wants: []string{"proxy.listen_starttls", "address already in use", "Dovecot", "another port"},
			breakIt: func(f *fixture) string { f.set("proxy.listen_starttls", busyAddr(f.t)); return "" }},
		{name: "TLS address in use", wants: []string{"proxy.listen_tls", "address already in use", "another port"},
			breakIt: func(f *fixture) string { f.set("proxy.listen_tls", busyAddr(f.t)); return "" }},
		{name: "admin address in use", wants: []string{"admin.listen", "address already in use", `admin.listen = ""`},
			breakIt: func(f *fixture) string { f.set("admin.listen", busyAddr(f.t)); return "" }},
		{name: "address not of this machine", wants: []string{"proxy.listen_tls", "192.0.2.1", "cannot assign requested address", "an address of this machine"},
			breakIt: func(f *fixture) string {
				if data, err := os.ReadFile("/proc/sys/net/ipv4/ip_nonlocal_bind"); err == nil && strings.TrimSpace(string(data)) != "0" {
					f.t.Skip("this machine lets programs bind addresses it does not have (net.ipv4.ip_nonlocal_bind)")
				}
				f.set("proxy.listen_tls", "192.0.2.1:9993")
				return ""
			}},
		{name: "port below 1024 without privilege", unprivileged: true,
			wants: []string{"proxy.listen_tls", `"127.0.0.1:993"`, "permission denied", "CAP_NET_BIND_SERVICE", "setcap", "AmbientCapabilities"},
			breakIt: func(f *fixture) string {
				if !lowPortsPrivileged(f.t) {
					f.t.Skip("an unprivileged process can bind port 993 here (net.ipv4.ip_unprivileged_port_start, or capabilities)")
				}
				f.set("proxy.listen_tls", "127.0.0.1:993")
				return ""
			}},
	}
}

// lowPortsPrivileged reports whether the child of the permission case
// lacks the right to bind port 993: as nobody (when the test runs as root)
// unless net.ipv4.ip_unprivileged_port_start lets everyone, and otherwise
// unless binding it succeeds here.
func lowPortsPrivileged(t *testing.T) bool {
	t.Helper()
	if os.Geteuid() != 0 {
		ln, err := net.Listen("tcp", "127.0.0.1:993")
		if err == nil {
			ln.Close()
		}
		return errors.Is(err, syscall.EACCES)
	}
	data, err := os.ReadFile("/proc/sys/net/ipv4/ip_unprivileged_port_start")
	if err != nil {
		return true // not Linux, or an old kernel: always 1024
	}
	var start int
	if _, err := fmt.Sscan(string(data), &start); err != nil {
		t.Fatalf("ip_unprivileged_port_start %q: %v", data, err)
	}
	return start > 993
}

func TestStartupErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range startupCases() {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t)
			cfg := tc.breakIt(f)
			if written := f.write(); cfg == "" {
				cfg = written
			}
			if tc.unprivileged {
				f.giveToNobody()
			}
			code, stderr := runServe(t, cfg, tc.unprivileged)
			checkStartupLine(t, code, stderr, tc.wants...)
		})
	}
}

// checkStartupLine checks a failed start-up: exit status 1 and exactly one
// line on stderr, no stack trace, a fix after " — ", and every one of wants.
func checkStartupLine(t *testing.T, code int, stderr string, wants ...string) {
	t.Helper()
	if code != 1 {
		t.Errorf("exit status %d, want 1", code)
	}
	lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
	if len(lines) != 1 || !strings.HasSuffix(stderr, "\n") {
		t.Fatalf("stderr is %d lines, want exactly one:\n%s", len(lines), stderr)
	}
	line := lines[0]
	t.Log(line)
	for _, bad := range []string{"panic", "goroutine", "runtime."} {
		if strings.Contains(line, bad) {
			t.Errorf("stderr has %q: %s", bad, line)
		}
	}
	if !strings.HasPrefix(line, "xapsproxy: ") {
		t.Errorf("line does not start with %q", "xapsproxy: ")
	}
	if !strings.Contains(line, " — ") {
		t.Errorf("line gives no fix after \" — \"")
	}
	for _, w := range wants {
		if !strings.Contains(line, w) {
			t.Errorf("line lacks %q", w)
		}
	}
}
