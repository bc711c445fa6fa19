package contrib_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// systemdRoot lays out a file system root for systemd-analyze --root: the
// unit in /etc/systemd/system, the binary where ExecStart looks for it, the
// kill of ExecReload, and the machine's own units (sysinit.target and the
// others every service depends on). No running systemd is needed.
func systemdRoot(t *testing.T, unitFile string) string {
	t.Helper()
	root := t.TempDir()
	for dir, files := range map[string]map[string]string{
		"etc/systemd/system": {"xapsproxy.service": unitFile},
		"usr/local/bin":      {"xapsproxy": binary(t)},
		"bin":                {"kill": "/bin/kill"},
	} {
		if err := os.MkdirAll(filepath.Join(root, dir), 0o755); err != nil {
			t.Fatal(err)
		}
		for name, src := range files {
			mode := os.FileMode(0o755)
			if strings.HasSuffix(name, ".service") {
				mode = 0o644 // systemd warns about an executable unit
			}
			copyFile(t, src, filepath.Join(root, dir, name), mode)
		}
	}
	units, err := filepath.EvalSymlinks("/lib/systemd/system")
	if err != nil {
		t.Fatalf("the machine's systemd units: %v", err)
	}
	if err := os.CopyFS(filepath.Join(root, "lib/systemd/system"), os.DirFS(units)); err != nil {
		t.Fatal(err)
	}
	return root
}

// verify runs systemd-analyze verify on the unit in root; every line it
// prints about xapsproxy.service is a problem.
func verify(t *testing.T, analyze, root string) (bool, string) {
	t.Helper()
	out, err := exec.Command(analyze, "verify", "--man=no", "--root="+root, "xapsproxy.service").CombinedOutput()
	return err == nil && !strings.Contains(string(out), "xapsproxy"), string(out)
}

// TestSystemdUnit checks contrib/systemd/xapsproxy.service with
// systemd-analyze: verify accepts it as it is installed (and, so that the
// check means something here, refuses it without the binary), and its
// hardening keeps the exposure score the unit's comment states.
func TestSystemdUnit(t *testing.T) {
	analyze := need(t, "systemd-analyze", "XAPSPROXY_TEST_SERVERS")
	unitFile := repo(t, "contrib", "systemd", "xapsproxy.service")
	unit := readRepo(t, "contrib", "systemd", "xapsproxy.service")
	root := systemdRoot(t, unitFile)
	if ok, out := verify(t, analyze, root); !ok {
		t.Errorf("systemd-analyze verify: %s", out)
	}
	if err := os.Remove(filepath.Join(root, "usr/local/bin/xapsproxy")); err != nil {
		t.Fatal(err)
	}
	if ok, out := verify(t, analyze, root); ok || !strings.Contains(out, "/usr/local/bin/xapsproxy") {
		t.Errorf("systemd-analyze verify accepts the unit without its binary: %q", out)
	}

	for _, want := range []string{
		"ExecStart=/usr/local/bin/xapsproxy serve -config /etc/xapsproxy/config.toml",
		"ExecReload=/bin/kill -HUP $MAINPID",
		"StateDirectory=xapsproxy",
		"AmbientCapabilities=CAP_NET_BIND_SERVICE",
		"CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
	} {
		if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(want) + `$`).MatchString(unit) {
			t.Errorf("the unit has no line %s", want)
		}
	}

	// The score is the unit file's; --offline does not ask a running
	// systemd.
	out, err := exec.Command(analyze, "security", "--offline=true", "--root="+root, "xapsproxy.service").CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze security: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`Overall exposure level for xapsproxy.service: ([0-9.]+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("systemd-analyze security printed no exposure level:\n%s", out)
	}
	stated := regexp.MustCompile(`rates this unit ([0-9.]+)`).FindStringSubmatch(unit)
	if stated == nil {
		t.Fatal("the unit's comment states no systemd-analyze security score")
	}
	got, _ := strconv.ParseFloat(string(m[1]), 64)
	want, _ := strconv.ParseFloat(stated[1], 64)
	if got > want {
		t.Errorf("systemd-analyze security rates the unit %.1f, worse than the %.1f its comment states:\n%s", got, want, out)
	}
}
