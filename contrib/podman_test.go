package contrib_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// podman runs podman on a storage root of the test's own (vfs, under a
// temporary directory), so that no image, container or volume outlives the
// test or meets the machine's.
type podman struct {
	t      *testing.T
	bin    string
	global []string
	run    []string // flags every podman run gets
	env    []string
}

func newPodman(t *testing.T) *podman {
	t.Helper()
	bin := need(t, "podman", "XAPSPROXY_TEST_SERVERS")
	if os.Geteuid() != 0 {
		// Rootless podman maps uids through /etc/subuid, and the build
		// context needs setcap: both tests run as root, as CI does.
		if os.Getenv("XAPSPROXY_TEST_SERVERS") == "required" {
			t.Fatal("the podman tests run as root, and XAPSPROXY_TEST_SERVERS=required")
		}
		t.Skip("the podman tests run as root")
	}
	// Short: podman refuses a runroot of more than 50 characters, and
	// t.TempDir's names the test.
	dir, err := os.MkdirTemp("", "xp-podman-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("remove podman's storage: %v", err)
		}
	})
	tmp := filepath.Join(dir, "tmp")
	if err := os.Mkdir(tmp, 0o700); err != nil {
		t.Fatal(err)
	}
	p := &podman{t: t, bin: bin,
		global: []string{"--root", filepath.Join(dir, "root"), "--runroot", filepath.Join(dir, "run"),
			"--tmpdir", filepath.Join(dir, "libpod"), "--storage-driver", "vfs",
			// No systemd, no journald in CI's container.
			"--cgroup-manager", "cgroupfs", "--events-backend", "none"},
		env: append(os.Environ(), "TMPDIR="+tmp),
	}
	// crun (podman's default runtime on Debian) refuses to start anything
	// on the hybrid cgroup hierarchy of CI's container; runc does not.
	if runc, err := exec.LookPath("runc"); err == nil {
		p.global = append(p.global, "--runtime", runc)
	}
	// The container's rlimits may not exceed the test's: podman's defaults
	// (nofile 1048576) do where the test runs without CAP_SYS_RESOURCE.
	p.run = []string{"--network", "none"}
	for _, l := range []struct {
		name     string
		resource int
	}{{"nofile", unix.RLIMIT_NOFILE}, {"nproc", unix.RLIMIT_NPROC}} {
		var lim unix.Rlimit
		if err := unix.Getrlimit(l.resource, &lim); err != nil {
			t.Fatal(err)
		}
		n := strconv.FormatUint(min(lim.Cur, 1024), 10)
		p.run = append(p.run, "--ulimit", l.name+"="+n+":"+n)
	}
	t.Cleanup(func() {
		// Containers first: their mounts are under dir.
		p.cmd(context.Background(), "rm", "--all", "--force")
		p.cmd(context.Background(), "volume", "rm", "--all", "--force")
	})
	return p
}

// result is what one podman command did.
type result struct {
	stdout, stderr string
	code           int // exit status; -1 when podman could not be run
}

func (p *podman) cmd(ctx context.Context, args ...string) result {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, p.bin, append(append([]string{}, p.global...), args...)...)
	cmd.Env = p.env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String()}
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		r.code = exit.ExitCode()
	case err != nil:
		r.code = -1
		r.stderr += err.Error()
	}
	return r
}

// must runs a podman command that has to succeed, and returns its stdout.
func (p *podman) must(args ...string) string {
	p.t.Helper()
	r := p.cmd(p.t.Context(), args...)
	if r.code != 0 {
		p.t.Fatalf("podman %s: exit %d\n%s%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// runImage runs image with args (none: its CMD) and the test's run flags.
func (p *podman) runImage(image string, flags []string, args ...string) result {
	p.t.Helper()
	full := append(append(append([]string{"run", "--rm"}, p.run...), flags...), image)
	return p.cmd(p.t.Context(), append(full, args...)...)
}

const imageName = "localhost/xapsproxy-test:latest"

// buildImage builds the image from the repository's Dockerfile. Base
// images cannot be pulled (CI has no registry), and the build stage's
// golang image is one: the build context "build" stands in for that stage,
// laid out as it would leave /out and the CA bundle, with the binary the
// test built the same way. Podman (buildah) then takes COPY --from=build
// from the context, never builds the stage (--pull=never would fail it),
// and builds the real final stage FROM scratch.
func buildImage(t *testing.T, p *podman) {
	t.Helper()
	setcap := need(t, "setcap", "XAPSPROXY_TEST_SERVERS")
	stage := t.TempDir()
	for _, c := range finalStage(t).copiesFromBuild(t) {
		dst := filepath.Join(stage, c.src)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		switch c.src {
		case "/out/xapsproxy":
			copyFile(t, binary(t), dst, 0o755)
			// As the build stage does.
			if out, err := exec.Command(setcap, "cap_net_bind_service=+ep", dst).CombinedOutput(); err != nil {
				t.Fatalf("setcap: %v\n%s", err, out)
			}
		case "/out/var/lib/xapsproxy", "/out/tmp":
			if err := os.Mkdir(dst, 0o755); err != nil {
				t.Fatal(err)
			}
		case "/etc/ssl/certs/ca-certificates.crt":
			copyFile(t, "/etc/ssl/certs/ca-certificates.crt", dst, 0o644)
		default:
			t.Fatalf("Dockerfile: the final stage copies %s from the build stage; lay it out here too", c.src)
		}
	}
	dir := t.TempDir() // the final stage reads nothing from the context
	p.must("build", "--pull=never", "--build-context", "build="+stage,
		"-f", repo(t, "Dockerfile"), "-t", imageName, dir)
}

func copyFile(t *testing.T, src, dst string, mode os.FileMode) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, data, mode); err != nil {
		t.Fatal(err)
	}
}
