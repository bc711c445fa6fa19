package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"testing"
)

// BenchmarkRoundTrip measures one NOOP round trip through the proxy (TLS to
// the client, plain to a backend that answers at once), against the same
// round trip straight to that backend: the proxy's own cost is the
// difference. Run: go test -run XXX -bench RoundTrip ./proxy
func BenchmarkRoundTrip(b *testing.B) {
	backendLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer backendLn.Close()
	go func() {
		for {
			c, err := backendLn.Accept()
			if err != nil {
				return
			}
			go echoBackend(c)
		}
	}()

	b.Run("direct", func(b *testing.B) {
		c, err := net.Dial("tcp", backendLn.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		roundTrips(b, c)
	})
	b.Run("proxy", func(b *testing.B) {
		env := startProxy(b, backendLn.Addr().String(), func(o *Options) { o.Logger = nil })
		c := env.dialTLS(b).conn
		roundTrips(b, c)
	})
}

// echoBackend greets, then answers every line "TAG OK NOOP completed.".
func echoBackend(c net.Conn) {
	defer c.Close()
	io.WriteString(c, "* OK [CAPABILITY IMAP4rev1 IDLE] ready\r\n")
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadSlice('\n')
		if err != nil {
			return
		}
		tag := line[:len(line)-len("NOOP\r\n")-1]
		fmt.Fprintf(c, "%s OK NOOP completed.\r\n", tag)
	}
}

func roundTrips(b *testing.B, c net.Conn) {
	r := bufio.NewReader(c)
	if _, err := r.ReadString('\n'); err != nil { // greeting
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := io.WriteString(c, "a NOOP\r\n"); err != nil {
			b.Fatal(err)
		}
		if _, err := r.ReadSlice('\n'); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAppend measures an APPEND of a 4000-byte message sent with a
// non-synchronizing literal (LITERAL+, as mbsync and iPhone Mail send
// them), straight to a backend and through the proxy, which sends every
// literal synchronizing and so waits one backend round trip for its "+"
// (continuation.go). Run: go test -run XXX -bench Append ./proxy
func BenchmarkAppend(b *testing.B) {
	ref, err := startRefServer()
	if err != nil {
		b.Fatal(err)
	}
	defer ref.ln.Close()
	go func() {
		for range ref.conns {
		}
	}()
	msg := make([]byte, 4000)
	for i := range msg {
		msg[i] = 'a' + byte(i%26)
	}
	cmd := fmt.Sprintf("a APPEND INBOX {%d+}\r\n%s\r\n", len(msg), msg)
	run := func(b *testing.B, c net.Conn) {
		r := bufio.NewReader(c)
		r.ReadString('\n') // greeting
		io.WriteString(c, "l LOGIN alice alicepw\r\n")
		if l, err := r.ReadString('\n'); err != nil || l[:4] != "l OK" {
			b.Fatalf("login: %q %v", l, err)
		}
		b.SetBytes(int64(len(msg)))
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if _, err := io.WriteString(c, cmd); err != nil {
				b.Fatal(err)
			}
			if l, err := r.ReadSlice('\n'); err != nil || string(l[:4]) != "a OK" {
				b.Fatalf("append: %q %v", l, err)
			}
		}
	}
	b.Run("direct", func(b *testing.B) {
		c, err := net.Dial("tcp", ref.ln.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		run(b, c)
	})
	b.Run("proxy", func(b *testing.B) {
		env := startProxy(b, ref.ln.Addr().String(), func(o *Options) { o.Logger = nil })
		run(b, env.dialTLS(b).conn)
	})
}
