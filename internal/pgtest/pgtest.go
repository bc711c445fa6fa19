// Package pgtest runs a real PostgreSQL server for the tests of one test
// binary: a throwaway cluster (initdb) in a temp dir, listening on a free
// 127.0.0.1 port, with trust authentication for the role xapsproxy. Each
// test gets a database of its own from New, dropped when the test ends.
//
// Use, in the package's tests:
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
//
//	func TestX(t *testing.T) {
//		url := pgtest.New(t) // postgres://xapsproxy@127.0.0.1:PORT/NAME?sslmode=disable
//		...
//	}
//
// The server starts on the first New (tests that never need it cost
// nothing) and Main stops it and removes its directory when the tests are
// done; Pdeathsig kills it if the test binary dies first. A test that
// stops and restarts the server (the database gone and back) starts one of
// its own with Start.
//
// When PostgreSQL is not installed (/usr/lib/postgresql/*/bin/initdb), New
// skips the test. Set XAPSPROXY_TEST_SERVERS=required (as CI does) to make
// that a failure instead.
package pgtest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/xapsproxy/xapsproxy/internal/serverproc"
)

// InstallHint says how to install what New needs.
const InstallHint = "install it with: apt-get install postgresql"

// Role is the superuser role the cluster is created with; URLs log in as it.
const Role = "xapsproxy"

const (
	startTimeout = 30 * time.Second
	stopTimeout  = 10 * time.Second
)

// The server of this test binary, started by the first New.
var (
	once    sync.Once
	srv     *Server
	srvErr  error
	counter atomic.Int64 // database names
)

// Main runs the tests of m, then stops the server if New started it and
// exits with m's code. Call it from TestMain.
func Main(m *testing.M) {
	code := m.Run()
	if srv != nil {
		if err := srv.close(); err != nil {
			fmt.Fprintf(os.Stderr, "pgtest: %v\n", err)
		}
	}
	os.Exit(code)
}

// Available reports whether PostgreSQL's server binaries are installed.
func Available() bool { return binDir() != "" }

// binDir returns the bin directory of the newest PostgreSQL installed, or "".
func binDir() string {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	best, bestVersion := "", -1
	for _, d := range dirs {
		v, err := strconv.Atoi(filepath.Base(filepath.Dir(d)))
		if err != nil {
			continue
		}
		if _, err := os.Stat(filepath.Join(d, "initdb")); err != nil {
			continue
		}
		if v > bestVersion {
			best, bestVersion = d, v
		}
	}
	return best
}

// New creates an empty database on the test binary's server and returns its
// URL; the database is dropped (its connections closed) when the test ends.
// It skips or fails the test when PostgreSQL is missing (see the package
// doc).
func New(t testing.TB) string {
	t.Helper()
	return get(t).New(t)
}

// Start starts a server of the test's own, stopped and removed when the
// test ends: for a test that stops or restarts it (the database gone and
// back), which the shared server of New must not do to the others. It
// costs an initdb, about a second.
func Start(t testing.TB) *Server {
	t.Helper()
	skipUnavailable(t)
	s, err := start(binDir())
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(func() {
		if err := s.close(); err != nil {
			t.Errorf("pgtest: %v", err)
		}
	})
	return s
}

// New creates an empty database on s and returns its URL; the database is
// dropped when the test ends (if s runs then).
func (s *Server) New(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("t%d_%d", os.Getpid(), counter.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	if err := s.exec(ctx, `CREATE DATABASE `+name); err != nil {
		t.Fatalf("pgtest: create database: %v", err)
	}
	t.Cleanup(func() {
		if !s.running() {
			return // a test of its own that stopped it: close removes everything
		}
		ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
		defer cancel()
		if err := s.exec(ctx, `DROP DATABASE IF EXISTS `+name+` WITH (FORCE)`); err != nil {
			t.Errorf("pgtest: drop database: %v", err)
		}
	})
	return s.url(name)
}

// Stop shuts the server down (fast shutdown: connections are closed).
// Its data stays for Restart.
func (s *Server) Stop(t testing.TB) {
	t.Helper()
	s.stop()
}

// Restart stops the server if it runs and starts it again on the same
// data and port, so that URLs given before work again.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.stop()
	if err := s.launch(s.port); err != nil {
		t.Fatalf("pgtest: restart: %v", err)
	}
}

func skipUnavailable(t testing.TB) {
	t.Helper()
	if !Available() {
		if os.Getenv("XAPSPROXY_TEST_SERVERS") == "required" {
			t.Fatal("pgtest: PostgreSQL not found and XAPSPROXY_TEST_SERVERS=required; " + InstallHint)
		}
		t.Skip("pgtest: PostgreSQL not found; " + InstallHint)
	}
}

// get returns the running server, starting it on first use.
func get(t testing.TB) *Server {
	t.Helper()
	skipUnavailable(t)
	once.Do(func() { srv, srvErr = start(binDir()) })
	if srvErr != nil {
		t.Fatalf("pgtest: %v", srvErr)
	}
	return srv
}

// Server is a running PostgreSQL cluster of the tests, with trust
// authentication for Role.
type Server struct {
	dir  string
	bin  string
	port int
	cred *syscall.Credential // nil: runs as ourselves
	proc serverproc.Process
	out  serverproc.SyncBuffer
}

func (s *Server) url(db string) string {
	return fmt.Sprintf("postgres://%s@127.0.0.1:%d/%s?sslmode=disable", Role, s.port, db)
}

func start(bin string) (*Server, error) {
	dir, err := os.MkdirTemp("", "pgtest-")
	if err != nil {
		return nil, err
	}
	s := &Server{dir: dir, bin: bin}
	if err := s.setup(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return s, nil
}

func (s *Server) setup() error {
	if os.Geteuid() == 0 {
		// PostgreSQL refuses to run as root.
		u, err := user.Lookup("nobody")
		if err != nil {
			return fmt.Errorf("postgres account: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		s.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(s.dir, uid, gid); err != nil {
			return err
		}
	}
	data := filepath.Join(s.dir, "data")
	initdb := exec.Command(filepath.Join(s.bin, "initdb"), "-D", data,
		"--auth=trust", "-U", Role, "-E", "UTF8", "--locale=C", "--no-sync")
	initdb.Dir = s.dir
	if s.cred != nil {
		initdb.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred, Pdeathsig: syscall.SIGKILL}
	}
	if out, err := initdb.CombinedOutput(); err != nil {
		return fmt.Errorf("initdb: %w\n%s", err, out)
	}
	// A port free a moment ago may be taken by the time postgres binds it.
	var err error
	for range 5 {
		var ports []int
		if ports, err = serverproc.FreePorts(1); err != nil {
			return err
		}
		if err = s.launch(ports[0]); err == nil {
			return nil
		}
	}
	return err
}

// launch starts postgres on port and waits until it accepts connections.
func (s *Server) launch(port int) error {
	s.port = port
	cmd := exec.Command(filepath.Join(s.bin, "postgres"), "-D", filepath.Join(s.dir, "data"),
		"-k", s.dir, "-h", "127.0.0.1", "-p", strconv.Itoa(s.port),
		"-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
		"-c", "listen_addresses=127.0.0.1", "-c", "max_connections=300")
	cmd.Dir = s.dir
	cmd.Stdout, cmd.Stderr = &s.out, &s.out
	if err := s.proc.Start(cmd, s.cred); err != nil {
		return fmt.Errorf("start postgres: %w", err)
	}
	if err := s.waitReady(); err != nil {
		s.proc.Kill()
		return fmt.Errorf("%w\n%s", err, s.out.String())
	}
	return nil
}

func (s *Server) waitReady() error {
	deadline := time.Now().Add(startTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := s.exec(ctx, `SELECT 1`)
		cancel()
		if err == nil {
			return nil
		}
		if s.proc.Pid() == 0 || exited(s.proc.Pid()) {
			return fmt.Errorf("postgres exited during startup: %w", err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("postgres not ready after %v: %w", startTimeout, err)
		}
		time.Sleep(20 * time.Millisecond) // poll interval, bounded by deadline
	}
}

// exited reports whether the process pid is gone or a zombie.
func exited(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	// The state follows the command name in parentheses.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	return len(f) == 0 || slices.Contains([]string{"Z", "X"}, f[0])
}

// exec runs one statement in the postgres database.
func (s *Server) exec(ctx context.Context, sql string) error {
	conn, err := pgx.Connect(ctx, s.url("postgres"))
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	_, err = conn.Exec(ctx, sql)
	return err
}

// stop shuts the server down (fast shutdown: SIGINT, then SIGKILL after
// stopTimeout).
func (s *Server) stop() {
	if pid := s.proc.Pid(); pid != 0 {
		syscall.Kill(pid, syscall.SIGINT)
	}
	s.proc.Stop(stopTimeout)
}

// running reports whether postgres runs.
func (s *Server) running() bool { return s.proc.Pid() != 0 }

func (s *Server) close() error {
	s.stop()
	return os.RemoveAll(s.dir)
}
