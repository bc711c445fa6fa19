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
