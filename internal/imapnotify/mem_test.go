package imapnotify

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xapsproxy/xapsproxy/internal/testpki"
)

// fakeServerEnv makes the test binary run as the memory test's IMAP server
// (see TestMain): a separate process, so that its memory is not counted.
const fakeServerEnv = "IMAPNOTIFY_FAKE_SERVER"

// fakeCertEnv and fakeKeyEnv name the fake server's certificate and key
// files, when it is to speak TLS.
const (
	fakeCertEnv = "IMAPNOTIFY_FAKE_CERT"
	fakeKeyEnv  = "IMAPNOTIFY_FAKE_KEY"
)

func TestMain(m *testing.M) {
	if os.Getenv(fakeServerEnv) == "1" {
		serveFake(os.Stdin, os.Stdout, os.Getenv(fakeCertEnv), os.Getenv(fakeKeyEnv))
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// serveFake is a minimal NOTIFY server: it prints its address, answers
// LOGIN, NOTIFY, NOOP and LOGOUT on every connection, and for each line
// read from control sends every connection a STATUS with a new UIDNEXT.
// With a certificate it speaks implicit TLS. It returns when control ends.
func serveFake(control io.Reader, out io.Writer, certFile, keyFile string) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(out, "error", err)
		return
	}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			fmt.Fprintln(out, "error", err)
			return
		}
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}})
	}
	fmt.Fprintln(out, ln.Addr())
	var mu sync.Mutex
	var conns []net.Conn
	go func() { // the accept loop; ends with the process
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, conn)
			mu.Unlock()
			go fakeSession(conn) // ends when the client hangs up
		}
	}()
	sc := bufio.NewScanner(control)
	for n := 3; sc.Scan(); n++ {
		mu.Lock()
		for _, c := range conns {
			c.SetWriteDeadline(time.Now().Add(5 * time.Second))
			fmt.Fprintf(c, "* STATUS INBOX (MESSAGES %d UIDNEXT %d)\r\n", n-1, n)
		}
		mu.Unlock()
		fmt.Fprintln(out, "poked")
	}
}

func fakeSession(conn net.Conn) {
	defer conn.Close()
	fmt.Fprint(conn, "* OK [CAPABILITY IMAP4rev1 LITERAL+ NOTIFY] fake ready\r\n")
	br := bufio.NewReader(conn)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		tag, cmd, _ := strings.Cut(strings.TrimSpace(line), " ")
		switch name, _, _ := strings.Cut(cmd, " "); name {
		case "NOTIFY":
			fmt.Fprintf(conn, "* STATUS INBOX (MESSAGES 1 UIDNEXT 2 UIDVALIDITY 7)\r\n%s OK NOTIFY completed\r\n", tag)
		case "LOGIN":
			fmt.Fprintf(conn, "%s OK [CAPABILITY IMAP4rev1 LITERAL+ NOTIFY] Logged in\r\n", tag)
		case "LOGOUT":
			fmt.Fprintf(conn, "* BYE bye\r\n%s OK done\r\n", tag)
			return
		default:
			fmt.Fprintf(conn, "%s OK done\r\n", tag)
		}
	}
}

// TestMemoryPerConnection measures what an idle watched account costs: a
// connected, logged-in Client in NOTIFY with a goroutine blocked in Next,
// as its owner would run it. Heap and stacks are measured after a GC,
// before and after opening the connections, and divided by their number.
// Over TLS, crypto/tls adds its own buffers (only reported).
func TestMemoryPerConnection(t *testing.T) {
	t.Run("plain", func(t *testing.T) {
		per := measureConnections(t, 500, nil, nil)
		if !raceEnabled && per > 16<<10 {
			t.Errorf("%.0f bytes per connection, want at most 16 KiB", per)
		}
	})
	t.Run("tls", func(t *testing.T) {
		ca := testpki.NewCA(t)
		certFile, keyFile := testpki.WritePEM(t, t.TempDir(), "imap", ca.ServerCert(t, "imap.example.com"))
		measureConnections(t, 200, []string{fakeCertEnv + "=" + certFile, fakeKeyEnv + "=" + keyFile},
			&tls.Config{RootCAs: ca.Pool(), ServerName: "imap.example.com"})
	})
}

// measureConnections opens n connections to a fake server in another
// process (env is added to its environment; tc, if set, is the client's
// TLS) and returns the heap and stack bytes each costs.
func measureConnections(t *testing.T, n int, env []string, tc *tls.Config) float64 {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(os.Environ(), fakeServerEnv+"=1"), env...)
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
		t.Fatal("fake server said nothing")
	}
	addr := out.Text()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	heap0, stack0 := heapAndStacks()
	clients := make([]*Client, 0, n)
	hints := make(chan uint32, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		var conn net.Conn
		if tc != nil {
			conn, err = tls.Dial("tcp", addr, tc)
		} else {
			conn, err = net.Dial("tcp", addr)
		}
		if err != nil {
			t.Fatal(err)
		}
		c := New(conn, Options{User: fmt.Sprint("user", i)})
		clients = append(clients, c)
		if err := c.Greeting(ctx); err != nil {
			t.Fatal(err)
		}
		if err := c.Login(ctx, "u", "p"); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Notify(ctx, []string{"INBOX"}); err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() { // the account owner: ends when ctx ends or c is closed
			defer wg.Done()
			for {
				h, err := c.Next(ctx)
				if err != nil {
					return
				}
				hints <- h.UIDNext
			}
		}()
	}
	defer func() {
		cancel()
		for _, c := range clients {
			c.Close()
		}
		wg.Wait()
	}()
	// Every client reads one notification, so that each has been through
	// a whole read and waits again, as a long-lived one does.
	fmt.Fprintln(control, "poke")
	for i := 0; i < n; i++ {
		select {
		case un := <-hints:
			if un != 3 {
				t.Fatalf("hint with UIDNEXT %d, want 3", un)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("%d of %d clients saw the notification", i, n)
		}
	}
	heap1, stack1 := heapAndStacks()
	heap, stack := float64(heap1-heap0)/float64(n), float64(stack1-stack0)/float64(n)
	per := heap + stack
	t.Logf("%d idle NOTIFY connections: %.0f bytes each (%.1f KiB): heap %.0f, goroutine stack %.0f", n, per, per/1024, heap, stack)
	if raceEnabled {
		t.Log("(with -race, which inflates both: not checked)")
	}
	return per
}

// heapAndStacks returns live heap and goroutine stack bytes after a GC.
func heapAndStacks() (heap, stack uint64) {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc, m.StackInuse
}
