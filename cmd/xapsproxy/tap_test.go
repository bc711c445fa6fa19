package main

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// tapDeadline bounds every relayed connection: longer than any test.
const tapDeadline = 5 * time.Minute

// loginTap is a TCP relay in front of an IMAP server that counts the
// connections and the LOGIN and AUTHENTICATE commands it passes on (Cyrus
// logs only to syslog, so this is how a test sees what the server was
// asked), and can cut every connection at once, as a server restart would.
//
// Goroutines: one accept loop, ended by closing the listener at cleanup;
// two per connection (one each way), ended when either side closes or
// dropAll closes both.
type loginTap struct {
	t      *testing.T
	ln     net.Listener
	target string

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	dials  int
	logins []string // each LOGIN or AUTHENTICATE line, as sent
	wg     sync.WaitGroup
}

func startTap(t *testing.T, target string) *loginTap {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tap := &loginTap{t: t, ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	tap.wg.Go(tap.accept)
	t.Cleanup(func() {
		ln.Close()
		tap.dropAll()
		tap.wg.Wait()
	})
	return tap
}

func (tap *loginTap) addr() string { return tap.ln.Addr().String() }

func (tap *loginTap) accept() {
	for {
		c, err := tap.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.DialTimeout("tcp", tap.target, 5*time.Second)
		if err != nil {
			c.Close()
			continue
		}
		deadline := time.Now().Add(tapDeadline)
		c.SetDeadline(deadline)
		s.SetDeadline(deadline)
		tap.mu.Lock()
		tap.dials++
		tap.conns[c], tap.conns[s] = struct{}{}, struct{}{}
		tap.mu.Unlock()
		tap.wg.Go(func() { io.Copy(c, s); tap.close(c, s) })
		tap.wg.Go(func() { tap.scan(c, s); tap.close(c, s) })
	}
}

// scan forwards client to server line by line, noting login commands.
func (tap *loginTap) scan(client, server net.Conn) {
	r := bufio.NewReader(client)
	for {
		line, err := r.ReadSlice('\n')
		if len(line) > 0 {
			if _, cmd, ok := bytes.Cut(line, []byte(" ")); ok {
				verb, _, _ := bytes.Cut(cmd, []byte(" "))
				if bytes.EqualFold(verb, []byte("LOGIN")) || bytes.EqualFold(verb, []byte("AUTHENTICATE")) {
					tap.mu.Lock()
					tap.logins = append(tap.logins, string(bytes.TrimRight(line, "\r\n")))
					tap.mu.Unlock()
				}
			}
			if _, werr := server.Write(line); werr != nil {
				return
			}
		}
		if err != nil && err != bufio.ErrBufferFull {
			return
		}
	}
}

func (tap *loginTap) close(conns ...net.Conn) {
	tap.mu.Lock()
	defer tap.mu.Unlock()
	for _, c := range conns {
		c.Close()
		delete(tap.conns, c)
	}
}

// dropAll cuts every relayed connection.
func (tap *loginTap) dropAll() {
	tap.mu.Lock()
	defer tap.mu.Unlock()
	for c := range tap.conns {
		c.Close()
	}
	clear(tap.conns)
}

// loginCount is how many LOGIN and AUTHENTICATE commands went through.
func (tap *loginTap) loginCount() int {
	tap.mu.Lock()
	defer tap.mu.Unlock()
	return len(tap.logins)
}

// dialCount is how many connections were relayed.
func (tap *loginTap) dialCount() int {
	tap.mu.Lock()
	defer tap.mu.Unlock()
	return tap.dials
}
