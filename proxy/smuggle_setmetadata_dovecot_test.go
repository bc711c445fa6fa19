package proxy

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/xapsproxy/xapsproxy/internal/dovecottest"
)

// A tagged response does not always end a command in Dovecot. SETMETADATA
// answers an invalid entry name with a tagged BAD at once and then goes on
// reading the rest of the command's entries, asking "+ OK" for a literal
// among them:
//
//	x SETMETADATA "" (/bad "v" {14}\r\n  ->  x BAD Error in IMAP command SETMETADATA: Entry name must ...
//	                                        + OK
//
// With a line long enough (~60 KB) Dovecot parses it in several reads and
// the "+ OK" comes some hundreds of microseconds after the BAD. By then the
// proxy has taken the BAD as the end of x, sent the client's next command
// (an APPEND, whose literal may draw a "+") and taken Dovecot's "+ OK" for
// the APPEND's. Dovecot reads the APPEND line as SETMETADATA's entry (the
// 14 bytes as the name, "{N}" as a value literal it then refuses silently),
// and the APPEND's "message" as commands the proxy never parsed: here a
// COMPRESS, which the proxy must never let through.
func TestDovecotContinuationAfterEarlyTaggedBAD(t *testing.T) {
	t.Parallel()
	d := dovecottest.Start(t, dovecottest.Options{
		ExtraConfig: "protocol imap {\n  mail_plugins = $mail_plugins imap_zlib\n}\n",
	})
	env := startProxy(t, d.IMAPAddr, nil)

	const appendLine = "y APPEND INBOX"
	const smuggled = "y COMPRESS DEFLATE"
	var b strings.Builder
	b.WriteString(`x SETMETADATA "" (/bad "v"`)
	for b.Len() < 60000 {
		b.WriteString(` /p "v"`)
	}
	fmt.Fprintf(&b, " {%d}\r\n%s {%d}\r\n", len(appendLine), appendLine, len(smuggled))
	attack := b.String()

	for attempt := range 20 {
		c := env.dialTLS(t)
		c.expectPrefix("* OK ")
		c.send("l LOGIN alice alicepw")
		if got := c.readUntilTagged("l"); !strings.HasPrefix(got, "l OK ") {
			t.Fatalf("LOGIN: %q", got)
		}
		c.sendRaw(attack)
		var transcript []string
		c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		for {
			line, err := c.r.ReadString('\n')
			if err != nil {
				break
			}
			line = strings.TrimRight(line, "\r\n")
			transcript = append(transcript, line[:min(len(line), 90)])
			if strings.HasPrefix(line, "+ ") {
				// The APPEND's "+": its message data follows.
				c.sendRaw(smuggled + "\r\n")
			}
			if strings.HasPrefix(line, "y ") || strings.HasPrefix(line, "* BYE") {
				break
			}
		}
		c.conn.Close()
		for _, l := range transcript {
			if strings.Contains(l, "compression") {
				t.Fatalf("attempt %d: Dovecot ran a COMPRESS the proxy took for message data: %q", attempt, transcript)
			}
		}
	}
}
