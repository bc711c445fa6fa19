package main

// Helpers that run the built binary, as an operator does: exit status,
// stderr and signals are those of a real process.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/xapsproxy/xapsproxy/internal/pgtest"
)

// built is the binary, made at most once per test run by binary.
var built struct {
	once sync.Once
	dir  string
	bin  string
	err  error
	out  []byte
}

// TestMain runs the tests beside the PostgreSQL server of pgtest, which
// pgtest.Main stops before it exits. Since nothing runs after it, the
// binary's directory of this run cannot be removed at the end: each run
// removes those left by runs that have ended instead (removeStaleBinaries).
func TestMain(m *testing.M) {
	removeStaleBinaries()
	pgtest.Main(m)
}

// binDirPrefix names the directories binary builds in; the PID of the test
// process that made one follows it.
const binDirPrefix = "xapsproxy-bin-"

// removeStaleBinaries removes the directories of built binaries whose test
// process is no longer running.
func removeStaleBinaries() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), binDirPrefix+"*"))
	for _, d := range dirs {
		pid, _, _ := strings.Cut(strings.TrimPrefix(filepath.Base(d), binDirPrefix), "-")
		if n, err := strconv.Atoi(pid); err == nil && n > 0 && syscall.Kill(n, 0) == syscall.ESRCH {
			os.RemoveAll(d)
		}
	}
}

// binary builds ./cmd/xapsproxy (once per run) and returns its path. The
// directory is readable by everyone, so that children may run as nobody.
func binary(t *testing.T) string {
	t.Helper()
	built.once.Do(func() {
		if built.dir, built.err = os.MkdirTemp("", binDirPrefix+strconv.Itoa(os.Getpid())+"-"); built.err != nil {
			return
		}
		if built.err = os.Chmod(built.dir, 0o755); built.err != nil {
			return
		}
		built.bin = filepath.Join(built.dir, "xapsproxy")
		built.out, built.err = exec.Command("go", "build", "-o", built.bin, ".").CombinedOutput()
	})
	if built.err != nil {
		t.Fatalf("go build: %v\n%s", built.err, built.out)
	}
	return built.bin
}

// exitTimeout bounds how long a serve that should fail at start-up may take.
const exitTimeout = 30 * time.Second

// runServe runs `xapsproxy serve -config cfg` to its end and returns its
// exit status and stderr. A serve still running after exitTimeout is killed
// and fails the test. With unprivileged set and the test running as root,
// the child runs as nobody.
func runServe(t *testing.T, cfg string, unprivileged bool) (int, string) {
	t.Helper()
	bin := binary(t) // the build does not count against exitTimeout
	ctx, cancel := context.WithTimeout(t.Context(), exitTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "serve", "-config", cfg)
	if unprivileged {
		cmd.SysProcAttr = nobody()
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("serve did not exit within %v; stderr:\n%s", exitTimeout, stderr.String())
	}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("run serve: %v", err)
	}
	if stdout.Len() > 0 {
		t.Errorf("serve wrote to stdout: %q", stdout.String())
	}
	return cmd.ProcessState.ExitCode(), stderr.String()
}

// nobodyID is the uid and gid of nobody on Debian.
const nobodyID = 65534

// nobody returns the attributes that make a child run as nobody when the
// test runs as root, and nil otherwise (the child is then unprivileged
// already).
func nobody() *syscall.SysProcAttr {
	if os.Geteuid() != 0 {
		return nil
	}
	return &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobodyID, Gid: nobodyID}}
}

// serveProc is a `xapsproxy serve` running in the background.
type serveProc struct {
	t    *testing.T
	cmd  *exec.Cmd
	done chan struct{} // closed when it has exited
	// listening is closed when it has logged that it listens.
	listening chan struct{}
	mu        sync.Mutex
	stderr    strings.Builder
}

// startServe runs `xapsproxy serve -config cfg` and returns once it logs
// that it is listening. It is killed when the test ends, and its log is
// shown when the test failed.
func startServe(t *testing.T, cfg string) *serveProc {
	t.Helper()
	p := startServeAsync(t, cfg)
	p.waitListening()
	return p
}

// startServeAsync is startServe without the wait: waitListening does it.
func startServeAsync(t *testing.T, cfg string) *serveProc {
	t.Helper()
	cmd := exec.Command(binary(t), "serve", "-config", cfg)
	pipe, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &serveProc{t: t, cmd: cmd, done: make(chan struct{}), listening: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(pipe)
		var once sync.Once
		for sc.Scan() {
			p.mu.Lock()
			p.stderr.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
			if strings.Contains(sc.Text(), "msg=listening ") {
				once.Do(func() { close(p.listening) })
			}
		}
		cmd.Wait()
		close(p.done)
	}()
	// Cleanups run last first: the log is shown after the kill, whole.
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("serve's log (PID %d):\n%s", p.pid(), p.log())
		}
	})
	t.Cleanup(p.kill)
	return p
}

// waitListening waits until p logs that it is listening.
func (p *serveProc) waitListening() {
	p.t.Helper()
	select {
	case <-p.listening:
	case <-p.done:
		p.t.Fatalf("serve exited at start-up (%v):\n%s", p.cmd.ProcessState, p.log())
	case <-time.After(exitTimeout):
		p.t.Fatalf("serve not listening after %v:\n%s", exitTimeout, p.log())
	}
}

func (p *serveProc) log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stderr.String()
}

func (p *serveProc) pid() int { return p.cmd.Process.Pid }

// kill sends SIGKILL, as a crash would end it, and waits for the exit.
func (p *serveProc) kill() {
	p.cmd.Process.Kill()
	select {
	case <-p.done:
	case <-time.After(exitTimeout):
		p.t.Errorf("serve (PID %d) did not die of SIGKILL", p.pid())
	}
}

// terminate sends SIGTERM, as systemd stops it, and waits for the exit.
func (p *serveProc) terminate() {
	p.t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		p.t.Fatal(err)
	}
	select {
	case <-p.done:
	case <-time.After(exitTimeout):
		p.t.Fatalf("serve (PID %d) did not stop within %v of SIGTERM", p.pid(), exitTimeout)
	}
}
