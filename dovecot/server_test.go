package dovecot_test

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/xapsproxy/xapsproxy/dovecot"
	"github.com/xapsproxy/xapsproxy/internal/testlog"
)

// serveEvents runs the real Server around a Handler on a loopback port and
// returns its address.
func serveEvents(t *testing.T) (*dovecot.Handler, *hintRecorder, string) {
	t.Helper()
	rec := &hintRecorder{}
	h, err := dovecot.NewHandler(dovecot.Options{Secret: testSecret, Hint: rec.add, Logger: testlog.New(t, testSecret)})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := dovecot.NewServer(h, testlog.New(t, testSecret))
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return h, rec, ln.Addr().String()
}

// closedByServer reports whether the server has closed c (EOF or a reset)
// within wait, reading and dropping whatever it sends.
func closedByServer(c net.Conn, wait time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(wait))
	_, err := io.Copy(io.Discard, c)
	return !errors.Is(err, os.ErrDeadlineExceeded)
}

func post(t *testing.T, c net.Conn, auth, body string) int {
	t.Helper()
	req := "POST " + dovecot.Path + " HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
	if auth != "" {
		req += "Authorization: " + auth + "\r\n"
	}
	req += "Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	c.SetDeadline(time.Time{})
	return resp.StatusCode
}

// Anyone who can reach the listener (every local user, with the default
// loopback address) can open connections without the secret. The server
// holds at most MaxConns of them: beyond, the oldest that has no request
// under way is closed, so that the proxy's file descriptors and memory stay
// bounded (they are the same ones port 993 needs), and a request Dovecot
// sends on a new connection still gets through.
func TestServerBoundsConnections(t *testing.T) {
	t.Parallel()
	_, rec, addr := serveEvents(t)
	var idle []net.Conn
	for range dovecot.MaxConns + 64 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		idle = append(idle, c)
	}
	// The server has accepted them all by the time it answers a new one.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := post(t, c, "Bearer "+testSecret, goodBody); got != http.StatusNoContent {
		t.Fatalf("Dovecot's POST behind %d silent connections: %d, want 204", len(idle), got)
	}
	if len(rec.take()) != 1 {
		t.Error("the POST gave no hint")
	}
	// All at once: the server's own header timeout must not be what
	// closes them.
	var closed atomic.Int64
	var wg sync.WaitGroup
	for _, c := range idle {
		wg.Go(func() {
			if closedByServer(c, 200*time.Millisecond) {
				closed.Add(1)
			}
		})
	}
	wg.Wait()
	// MaxConns open in all, Dovecot's among them.
	if want := len(idle) + 1 - dovecot.MaxConns; closed.Load() < int64(want) {
		t.Errorf("the server closed %d of %d silent connections, want at least %d (at most %d open)", closed.Load(), len(idle), want, dovecot.MaxConns)
	}
}

// A connection that made a request without the right secret is closed
// after the answer: only Dovecot keeps one open for its next request.
func TestServerClosesAfterRefusal(t *testing.T) {
	t.Parallel()
	_, _, addr := serveEvents(t)
	for _, tt := range []struct{ auth, body string }{
		{"", goodBody},
		{"Bearer wrong-secret-0123456789", goodBody},
		{"Bearer " + testSecret, "{"},
	} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		status := post(t, c, tt.auth, tt.body)
		if !closedByServer(c, time.Second) {
			t.Errorf("Authorization %q, body %q: answered %d and kept the connection open", tt.auth, tt.body, status)
		}
	}
	// Dovecot's connection stays open for its next request.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for range 2 {
		if got := post(t, c, "Bearer "+testSecret, goodBody); got != http.StatusNoContent {
			t.Fatalf("POST: %d, want 204", got)
		}
	}
	if closedByServer(c, 100*time.Millisecond) {
		t.Error("the server closed the connection of accepted requests")
	}
}

// At the limit, connections idle between Dovecot's requests go before any
// other: Dovecot opens a new one when it finds its old one closed.
func TestServerEvictsIdleFirst(t *testing.T) {
	t.Parallel()
	_, _, addr := serveEvents(t)
	var kept []net.Conn
	for range dovecot.MaxConns - 1 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		kept = append(kept, c)
	}
	old, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	if got := post(t, old, "Bearer "+testSecret, goodBody); got != http.StatusNoContent {
		t.Fatalf("POST: %d", got)
	}
	// The limit is reached; one more connection closes the idle one (once
	// the server, which may still be finishing the answer, calls it idle).
	time.Sleep(50 * time.Millisecond)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := post(t, c, "Bearer "+testSecret, goodBody); got != http.StatusNoContent {
		t.Fatalf("POST: %d", got)
	}
	if !closedByServer(old, time.Second) {
		t.Error("the idle connection was not the one closed")
	}
	if closedByServer(kept[0], 100*time.Millisecond) {
		t.Error("the oldest busy connection was closed, with an idle one there")
	}
}
