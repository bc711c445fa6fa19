package main

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// The admin listener answers anyone who reaches it (/healthz and /readyz
// need no token), in the process that serves IMAP: one address may hold
// at most adminConnsPerIP connections, so that it cannot use up the file
// descriptors and memory the proxy's clients and backend connections
// need; the next is closed at once, and a slot freed serves again.
func TestAdminListenerBoundsConnectionsPerAddress(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	s.start()
	addr := s.app.adminLn.Addr().String()
	// ask sends GET /healthz on c and reads the answer: nil when it is 200.
	ask := func(c net.Conn, r *bufio.Reader) error {
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"); err != nil {
			return err
		}
		res, err := http.ReadResponse(r, nil)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != 200 {
			return errors.New(res.Status)
		}
		return nil
	}
	var held []net.Conn
	for i := range adminConnsPerIP {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := ask(c, bufio.NewReader(c)); err != nil {
			t.Fatalf("connection %d: %v", i+1, err)
		}
		held = append(held, c) // kept alive, idle
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := ask(c, bufio.NewReader(c)); err == nil {
		t.Fatalf("connection %d from one address was served, want it closed", adminConnsPerIP+1)
	}
	held[0].Close()
	waitUntil(t, "a new connection served once one is closed", func() bool {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return ask(c, bufio.NewReader(c)) == nil
	})
	if idle := s.app.admin.IdleTimeout; idle <= 0 || idle > 5*time.Minute {
		t.Errorf("admin server IdleTimeout = %v, want a bound on idle connections", idle)
	}
}

// An IPv6 address counts with its /64; an IPv4 one alone.
func TestAdminRemoteKey(t *testing.T) {
	for addr, want := range map[string]string{
		"192.0.2.7:1234":           "192.0.2.7",
		"[::ffff:192.0.2.7]:1234":  "192.0.2.7",
		"[2001:db8:1:2::9]:443":    "2001:db8:1:2::/64",
		"[2001:db8:1:2:ff::1]:443": "2001:db8:1:2::/64",
	} {
		a, _ := net.ResolveTCPAddr("tcp", addr)
		if got := remoteKey(a); got != want {
			t.Errorf("remoteKey(%s) = %q, want %q", addr, got, want)
		}
	}
}
