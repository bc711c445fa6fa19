package proxy

import (
	"fmt"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// A client that sends a FETCH and reads nothing is cut off once a write has
// waited WriteTimeout, and its backend connection closed with it (before,
// the session lived as long as the backend kept it busy).
func TestStalledReaderIsCutOff(t *testing.T) {
	t.Parallel()
	_, client, backend := proxySession(t, func(o *Options) { o.WriteTimeout = 200 * time.Millisecond })
	login(t, client, backend, "alice")
	client.send("f FETCH 1 BODY[]")
	backend.expect("f FETCH 1 BODY[]")
	const size = 256 << 20 // far more than any socket buffers
	written := make(chan error, 1)
	go func() {
		if _, err := fmt.Fprintf(backend.conn, "* 1 FETCH (BODY[] {%d}\r\n", size); err != nil {
			written <- err
			return
		}
		_, err := io.CopyN(backend.conn, zeros{}, size)
		written <- err
	}()
	select {
	case err := <-written:
		if err == nil {
			t.Fatal("the proxy took all the data for a client that reads nothing")
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the session is still alive 20s after its client stopped reading (write timeout 200ms)")
	}
}

// A client that reads slowly but steadily is never cut off, though the whole
// response takes far longer than the write timeout.
func TestSlowReaderIsServed(t *testing.T) {
	t.Parallel()
	_, client, backend := proxySession(t, func(o *Options) { o.WriteTimeout = 3 * time.Second })
	login(t, client, backend, "alice")
	client.send("f FETCH 1 BODY[]")
	backend.expect("f FETCH 1 BODY[]")
	const size = 12 << 20
	go func() {
		fmt.Fprintf(backend.conn, "* 1 FETCH (BODY[] {%d}\r\n", size)
		io.CopyN(backend.conn, zeros{}, size)
		io.WriteString(backend.conn, ")\r\nf OK Fetch completed.\r\n")
	}()
	client.expect(fmt.Sprintf("* 1 FETCH (BODY[] {%d}", size))
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	start := time.Now()
	buf := make([]byte, 16<<10)
	for got := 0; got < size; {
		<-tick.C // pace the reader: ~3 MB/s at most
		client.conn.SetReadDeadline(time.Now().Add(readTimeout))
		n, err := client.r.Read(buf[:min(len(buf), size-got)])
		if err != nil {
			t.Fatalf("after %d bytes in %v: %v", got, time.Since(start), err)
		}
		got += n
	}
	client.expect(")", "f OK Fetch completed.")
	if d := time.Since(start); d < 3*time.Second {
		t.Logf("the slow read took only %v; the write timeout was not exercised", d)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// Each write sets its own deadline, unless the session froze the writer to
// set a short one of its own.
func TestDeadlineWriter(t *testing.T) {
	t.Parallel()
	c := &deadlineConn{}
	var frozen atomic.Bool
	w := deadlineWriter{conn: c, timeout: time.Minute, frozen: &frozen}
	for range 3 {
		before := time.Now()
		if _, err := io.WriteString(w, "x"); err != nil {
			t.Fatal(err)
		}
		if d := c.deadline.Sub(before); d < time.Minute || d > time.Minute+time.Second {
			t.Fatalf("deadline %v after the write started, want a minute", d)
		}
	}
	if c.set != 3 || c.written.String() != "xxx" {
		t.Fatalf("%d deadlines for %q", c.set, c.written.String())
	}
	frozen.Store(true)
	io.WriteString(w, "y")
	if c.set != 3 {
		t.Fatal("a frozen writer changed the deadline")
	}
}

type deadlineConn struct {
	net.Conn
	deadline time.Time
	set      int
	written  strings.Builder
}

func (c *deadlineConn) SetWriteDeadline(t time.Time) error {
	c.deadline, c.set = t, c.set+1
	return nil
}

func (c *deadlineConn) Write(p []byte) (int, error) { return c.written.Write(p) }
