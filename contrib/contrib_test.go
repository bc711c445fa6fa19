// Package contrib_test checks the packaging the repository ships: the
// Dockerfile at its root (built with podman from a host-built binary, then
// run), contrib/docker's compose example and its configurations (its
// Dovecot side run on this machine's Dovecot), and contrib/systemd's unit
// (systemd-analyze). Tests needing podman, systemd-analyze or Dovecot skip
// when they are missing, unless XAPSPROXY_TEST_SERVERS=required
// (XAPSPROXY_TEST_DOVECOT=required for Dovecot), as CI sets.
package contrib_test

import (
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// repo returns the path of a file in the repository; tests run in contrib/.
func repo(t *testing.T, parts ...string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join(append([]string{".."}, parts...)...))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func readRepo(t *testing.T, parts ...string) string {
	t.Helper()
	data, err := os.ReadFile(repo(t, parts...))
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// need returns the path of an outside program the test cannot do without:
// it skips the test when the program is missing, or fails it when env is
// "required".
func need(t *testing.T, program, env string) string {
	t.Helper()
	p, err := exec.LookPath(program)
	if err == nil {
		return p
	}
	if os.Getenv(env) == "required" {
		t.Fatalf("%s is not installed and %s=required: %v", program, env, err)
	}
	t.Skipf("%s is not installed: %v", program, err)
	return ""
}

// testVersion is what the test builds put in main.buildVersion, as the
// Dockerfile's VERSION does.
const testVersion = "v0.0.0-packaging-test"

// built is the binary, made at most once per test run by binary.
var built struct {
	once sync.Once
	dir  string
	bin  string
	err  error
	out  []byte
}

func TestMain(m *testing.M) {
	code := m.Run()
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
	os.Exit(code)
}

// binary builds cmd/xapsproxy as the Dockerfile's build stage does (static,
// trimmed, VERSION = testVersion), once per run, and returns its path.
func binary(t *testing.T) string {
	t.Helper()
	built.once.Do(func() {
		if built.dir, built.err = os.MkdirTemp("", "xapsproxy-contrib-"); built.err != nil {
			return
		}
		built.bin = filepath.Join(built.dir, "xapsproxy")
		cmd := exec.Command("go", "build", "-trimpath", "-buildvcs=false",
			"-ldflags", "-s -w -X main.buildVersion="+testVersion, "-o", built.bin, "./cmd/xapsproxy")
		cmd.Dir = ".."
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		built.out, built.err = cmd.CombinedOutput()
	})
	if built.err != nil {
		t.Fatalf("go build: %v\n%s", built.err, built.out)
	}
	return built.bin
}

// TestDockerfileBuildsLikeTheTests keeps binary's flags those of the
// Dockerfile, and the result static: FROM scratch has no libc to load.
// It needs no podman: what it checks holds for every builder.
func TestDockerfileBuildsLikeTheTests(t *testing.T) {
	df := readRepo(t, "Dockerfile")
	for _, want := range []string{
		"CGO_ENABLED=0 go build -trimpath -buildvcs=false",
		`-ldflags "-s -w -X main.buildVersion=${VERSION}"`,
		"./cmd/xapsproxy",
	} {
		if !strings.Contains(df, want) {
			t.Errorf("Dockerfile does not build with %s; the tests' binary() does", want)
		}
	}
	for _, c := range finalStage(t).copiesFromBuild(t) {
		if c.src == "/out/xapsproxy" && c.chown != "" {
			t.Errorf("Dockerfile: COPY --chown of the binary: a change of owner clears its file capability")
		}
	}
	f, err := elf.Open(binary(t))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("the binary is dynamically linked (%v): it cannot run FROM scratch", p.Type)
		}
	}
	out, err := exec.Command(binary(t), "version").Output()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(out), "xapsproxy "+testVersion+"\n"; got != want {
		t.Errorf("version printed %q, want %q", got, want)
	}
}
