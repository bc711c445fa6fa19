package watch_test

// What an account watched with IDLE costs the proxy: many watchers against
// a small IMAP server in another process, so that only the proxy's side is
// measured.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xapsproxy/xapsproxy/config"
	"github.com/xapsproxy/xapsproxy/watch"
)

// idleServerEnv makes the test binary run as the memory test's IMAP server
// (see TestMain).
const idleServerEnv = "WATCH_IDLE_FAKE_SERVER"

func TestMain(m *testing.M) {
	if os.Getenv(idleServerEnv) == "1" {
		serveIdleFake(os.Stdin, os.Stdout)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestMemoryPerIdleAccount measures what an account watched with IDLE
// costs: its owner, its watcher, its backend connection, the goroutine
// blocked in IDLE. Heap and goroutine stacks are measured after a GC, before
// the manager runs and once every account is back in IDLE after one new
// message each (so that every watcher has been through a whole round:
// IDLE, EXISTS, DONE, EXAMINE, the store, IDLE again), and divided by the
// number of accounts. Not parallel: it reads the process's memory.
//
// With WATCH_MEM_PROFILE=FILE, every allocation is sampled and the heap
// profile of the accounts in IDLE is written to FILE (go tool pprof
// -sample_index=inuse_space).
func TestMemoryPerIdleAccount(t *testing.T) {
	const accounts = 500
	if os.Getenv("WATCH_MEM_PROFILE") != "" {
		runtime.MemProfileRate = 1
	}
	srv := startIdleFake(t)
	st := openStore(t)
	rec := &recorder{}
	for i := 1; i <= accounts; i++ {
		if err := st.Register(context.Background(), registration(fakeUser(i), i, "INBOX")); err != nil {
			t.Fatal(err)
		}
	}
	m := watch.New(watch.Options{
		Store:    st,
		Notifier: rec,
		Backend:  config.Backend{Address: srv.addr},
		Watch:    masterLogin("master", "masterpw"),
		Source:   watch.SourceIdle,
		Logger:   slog.New(slog.DiscardHandler), // t.Log would keep every line in memory
	})
	heap0, stack0 := heapAndStacks()

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	waitIdling := func(what string) {
		deadline := time.Now().Add(60 * time.Second)
		for {
			n := srv.idling(t)
			if n == accounts && m.Stats().Watchers[watch.StateWatching] == accounts {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d of %d accounts in IDLE; stats %+v", what, n, accounts, m.Stats())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitIdling("first IDLE")
	srv.poke(t) // one new message for every account
	deadline := time.Now().Add(60 * time.Second)
	for len(rec.snapshot()) < accounts {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d new-mail events", len(rec.snapshot()), accounts)
		}
		time.Sleep(50 * time.Millisecond)
	}
	waitIdling("IDLE after the new mail")

	heap1, stack1 := heapAndStacks()
	if p := os.Getenv("WATCH_MEM_PROFILE"); p != "" {
		writeHeapProfile(t, p)
	}
	heap := float64(int64(heap1)-int64(heap0)) / accounts
	stack := float64(int64(stack1)-int64(stack0)) / accounts
	per := heap + stack
	t.Logf("%d accounts in IDLE: %.0f bytes each (%.1f KiB): heap %.0f, goroutine stacks %.0f", accounts, per, per/1024, heap, stack)
	if raceEnabled {
		t.Log("(with -race, which inflates both: not checked)")
		return
	}
	if per > 16<<10 {
		t.Errorf("%.0f bytes per account watched with IDLE, want at most 16 KiB", per)
	}
}

// heapAndStacks returns live heap and goroutine stack bytes after a GC.
func heapAndStacks() (heap, stack uint64) {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc, ms.StackInuse
}

func writeHeapProfile(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		t.Fatal(err)
	}
}

// idleFake is the memory test's IMAP server, running in a child process.
type idleFake struct {
	addr    string
	control io.Writer
	out     *bufio.Scanner
}

func startIdleFake(t *testing.T) *idleFake {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), idleServerEnv+"=1")
	control, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { control.Close(); cmd.Wait() })
	out := bufio.NewScanner(stdout)
	if !out.Scan() {
		t.Fatal("fake IMAP server said nothing")
	}
	return &idleFake{addr: out.Text(), control: control, out: out}
}

// ask sends the server a control line and returns its one-line answer.
func (f *idleFake) ask(t *testing.T, line string) string {
	t.Helper()
	fmt.Fprintln(f.control, line)
	if !f.out.Scan() {
		t.Fatalf("fake IMAP server: no answer to %q", line)
	}
	return f.out.Text()
}

// idling returns how many connections are in IDLE.
func (f *idleFake) idling(t *testing.T) int {
	t.Helper()
	a := f.ask(t, "idling")
	n, err := strconv.Atoi(a)
	if err != nil {
		t.Fatalf("fake IMAP server: %q", a)
	}
	return n
}

// poke delivers a message to every account in IDLE, which is told with an
// EXISTS.
func (f *idleFake) poke(t *testing.T) {
	t.Helper()
	if a := f.ask(t, "poke"); a != "poked" {
		t.Fatalf("fake IMAP server: %q", a)
	}
}

// serveIdleFake is a minimal IMAP server for watchers in IDLE: it prints its
// address, then answers every connection's LOGIN, CAPABILITY, EXAMINE,
// SELECT, STATUS, IDLE/DONE, NOOP and LOGOUT, with one INBOX per connection
// holding one message. For each line read from control it answers:
// "idling": how many connections are in IDLE; "poke": a new message in
// every INBOX, each connection in IDLE told with an EXISTS, then "poked".
// It returns when control ends.
func serveIdleFake(control io.Reader, out io.Writer) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(out, "error", err)
		return
	}
	fmt.Fprintln(out, ln.Addr())
	srv := &fakeIMAP{sessions: make(map[*fakeIMAPSession]bool)}
	go func() { // the accept loop; ends with the process
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			s := &fakeIMAPSession{srv: srv, conn: conn, messages: 1}
			srv.mu.Lock()
			srv.sessions[s] = true
			srv.mu.Unlock()
			go s.serve() // ends when the client hangs up
		}
	}()
	sc := bufio.NewScanner(control)
	for sc.Scan() {
		switch sc.Text() {
		case "idling":
			srv.mu.Lock()
			n := 0
			for s := range srv.sessions {
				if s.idleTag != "" {
					n++
				}
			}
			srv.mu.Unlock()
			fmt.Fprintln(out, n)
		case "poke":
			srv.mu.Lock()
			for s := range srv.sessions {
				s.messages++
				if s.idleTag != "" {
					s.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
					fmt.Fprintf(s.conn, "* %d EXISTS\r\n", s.messages)
				}
			}
			srv.mu.Unlock()
			fmt.Fprintln(out, "poked")
		default:
			fmt.Fprintln(out, "unknown")
		}
	}
}

type fakeIMAP struct {
	mu       sync.Mutex
	sessions map[*fakeIMAPSession]bool
}

type fakeIMAPSession struct {
	srv  *fakeIMAP
	conn net.Conn
	// Under srv.mu:
	messages uint32
	idleTag  string // the running IDLE's tag, "" if none
}

func (s *fakeIMAPSession) serve() {
	defer func() {
		s.srv.mu.Lock()
		delete(s.srv.sessions, s)
		s.srv.mu.Unlock()
		s.conn.Close()
	}()
	const caps = "IMAP4rev1 LITERAL+ IDLE"
	s.write("* OK [CAPABILITY " + caps + "] fake ready\r\n")
	br := bufio.NewReader(s.conn)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimRight(line, "\r\n")
		s.srv.mu.Lock()
		idleTag := s.idleTag
		n := s.messages
		s.srv.mu.Unlock()
		if idleTag != "" {
			if strings.EqualFold(line, "DONE") {
				s.setIdle("", idleTag+" OK Idle completed\r\n")
			} else {
				s.write("* BAD expected DONE\r\n")
			}
			continue
		}
		tag, cmd, _ := strings.Cut(line, " ")
		name, _, _ := strings.Cut(cmd, " ")
		switch strings.ToUpper(name) {
		case "CAPABILITY":
			s.write("* CAPABILITY " + caps + "\r\n" + tag + " OK done\r\n")
		case "LOGIN":
			s.write(tag + " OK [CAPABILITY " + caps + "] Logged in\r\n")
		case "EXAMINE", "SELECT":
			s.write(fmt.Sprintf("* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n"+
				"* OK [PERMANENTFLAGS ()] Read-only mailbox.\r\n* %d EXISTS\r\n* 0 RECENT\r\n"+
				"* OK [UIDVALIDITY 1700000000] UIDs valid\r\n* OK [UIDNEXT %d] Predicted next UID\r\n"+
				"%s OK [READ-ONLY] Examine completed\r\n", n, n+1, tag))
		case "STATUS":
			s.write(fmt.Sprintf("* STATUS INBOX (UIDNEXT %d UIDVALIDITY 1700000000)\r\n%s OK done\r\n", n+1, tag))
		case "IDLE":
			s.setIdle(tag, "+ idling\r\n")
		case "LOGOUT":
			s.write("* BYE bye\r\n" + tag + " OK done\r\n")
			return
		case "NOOP":
			s.write(tag + " OK done\r\n")
		default:
			s.write(tag + " BAD unknown command\r\n")
		}
	}
}

// setIdle notes the IDLE running (tag) or none (""), and sends p, at once:
// a poke's EXISTS comes after the continuation request.
func (s *fakeIMAPSession) setIdle(tag, p string) {
	s.srv.mu.Lock()
	defer s.srv.mu.Unlock()
	s.idleTag = tag
	s.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(s.conn, p)
}

// write sends p under the server's mutex, so that a poke's EXISTS never
// lands inside a response.
func (s *fakeIMAPSession) write(p string) {
	s.srv.mu.Lock()
	defer s.srv.mu.Unlock()
	s.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(s.conn, p)
}
