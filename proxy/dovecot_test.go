package proxy

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/xapsproxy/xapsproxy/internal/dovecottest"
	"github.com/xapsproxy/xapsproxy/internal/imapwire"
)

// Messages stored through the proxy and fetched through it come back byte
// for byte as fetched directly from Dovecot, and as they were sent.
func TestDovecotMessagesByteIdentical(t *testing.T) {
	t.Parallel()
	d := dovecottest.Start(t, dovecottest.Options{})
	env := startProxy(t, d.IMAPAddr, nil)

	rng := rand.New(rand.NewPCG(1, 2))
	big := make([]byte, 10<<20)
	for i := range big {
		big[i] = 'a' + byte(rng.IntN(26))
		if i%77 == 76 {
			big[i-1], big[i] = '\r', '\n'
		}
	}
	eightBit := []byte("Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\nContent-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGr\xfc\xdfe aus K\xf6ln, \xe9t\xe9 \xa9 \xff\xfe\r\n")
	binary := make([]byte, 4096)
	for i := range binary {
		binary[i] = byte(i)
	}
	binaryMsg := append([]byte("Subject: binary\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n\r\n"), binary...)
	messages := []struct {
		name string
		data []byte
		lit  string // how the client sends it: "{N}", "{N+}" or "~{N}"
	}{
		{"protocol-looking body", []byte("Subject: tricky\r\n\r\n* CAPABILITY IMAP4rev1\r\n* BYE not really\r\na1 OK [CAPABILITY IMAP4rev1 XAPPLEPUSHSERVICE] fake\r\n+ go ahead\r\n{5}\r\n"), "{N}"},
		{"8-bit", eightBit, "{N+}"},
		{"binary", binaryMsg, "~{N}"},
		{"10 MB", append([]byte("Subject: big\r\n\r\n"), big...), "{N+}"},
	}

	viaProxy := env.dialTLS(t)
	viaProxy.expectPrefix("* OK ")
	viaProxy.send("l LOGIN alice " + d.Password("alice"))
	viaProxy.expectPrefix("l OK ")
	for i, m := range messages {
		size := fmt.Sprint(len(m.data))
		lit := strings.Replace(m.lit, "N", size, 1)
		tag := fmt.Sprintf("ap%d", i)
		viaProxy.sendRaw(tag + " APPEND INBOX " + lit + "\r\n")
		if !strings.Contains(lit, "+") {
			viaProxy.expectPrefix("+ ")
		}
		viaProxy.sendRaw(string(m.data) + "\r\n")
		viaProxy.expectPrefix(tag + " OK ")
	}

	c, err := net.Dial("tcp", d.IMAPAddr)
	if err != nil {
		t.Fatal(err)
	}
	direct := newLineConn(t, c)
	direct.expectPrefix("* OK ")
	direct.send("l LOGIN alice " + d.Password("alice"))
	direct.expectPrefix("l OK ")
	for _, conn := range []*lineConn{viaProxy, direct} {
		conn.send("s SELECT INBOX")
		for !strings.HasPrefix(conn.readLine(), "s OK ") {
		}
	}
	for i, m := range messages {
		for _, item := range []string{"BODY.PEEK[]", "BINARY.PEEK[]"} {
			if item == "BINARY.PEEK[]" && m.lit != "~{N}" {
				continue
			}
			got := viaProxy.fetchLiteral(t, i+1, item)
			want := direct.fetchLiteral(t, i+1, item)
			if !bytes.Equal(got, want) {
				t.Errorf("%s %s: %d bytes through the proxy differ from %d bytes direct", m.name, item, len(got), len(want))
			}
			// Dovecot serves a message with NULs in BODY[] re-encoded (a
			// plain literal cannot carry NUL); BINARY[] gives the original.
			reencoded := m.lit == "~{N}" && item == "BODY.PEEK[]"
			if !reencoded && !bytes.Equal(want, m.data) {
				t.Errorf("%s %s: Dovecot returned %d bytes, %d were appended", m.name, item, len(want), len(m.data))
			}
		}
	}
}

// expectPrefix reads one line and checks how it starts.
func (c *lineConn) expectPrefix(prefix string) string {
	c.t.Helper()
	l := c.readLine()
	if !strings.HasPrefix(l, prefix) {
		c.t.Fatalf("read %q, want a line starting %q", l, prefix)
	}
	return l
}

// fetchLiteral fetches one item of message uid and returns the literal of
// the response exactly as it came off the wire.
func (c *lineConn) fetchLiteral(t *testing.T, uid int, item string) []byte {
	t.Helper()
	c.send(fmt.Sprintf("f UID FETCH %d (%s)", uid, item))
	line := c.readLine()
	lit, ok := imapwire.LiteralSuffix([]byte(line))
	if !ok || !strings.HasPrefix(line, "* ") {
		t.Fatalf("FETCH response %q has no literal", line)
	}
	data := make([]byte, lit.Size)
	if _, err := io.ReadFull(c.r, data); err != nil {
		t.Fatal(err)
	}
	if rest := c.readLine(); rest != ")" && !strings.HasSuffix(rest, ")") {
		t.Fatalf("after the literal: %q", rest)
	}
	c.expectPrefix("f OK ")
	return data
}

// Same hole with IDLE, against a real Dovecot that trusts the proxy
// (forward_client_ip off): the client's x-originating-ip reaches Dovecot.
func TestDovecotRefusedLiteralCannotSpoofAddress(t *testing.T) {
	t.Parallel()
	d := dovecottest.Start(t, dovecottest.Options{ExtraConfig: "login_trusted_networks = 127.0.0.1/32"})
	env := startProxy(t, d.IMAPAddr, nil)
	c := env.dialTLS(t)
	c.expectPrefix("* OK ")
	c.send("a IDLE {100000}")
	c.expect("a BAD IDLE is not valid before login")
	c.send(`i ID ("x-originating-ip" "10.9.9.9")`)
	for !strings.HasPrefix(c.readLine(), "i OK ") {
	}
	c.send("l LOGIN alice alicepw")
	for !strings.HasPrefix(c.readLine(), "l OK ") {
	}
	re := regexp.MustCompile(`Login: user=<alice>.*?(rip=[0-9.]+)`)
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if m := re.FindStringSubmatch(d.Log()); m != nil {
			if m[1] != "rip=127.0.0.1" {
				t.Errorf("Dovecot logged %s: the client's x-originating-ip got through", m[1])
			}
			return
		}
	}
}
