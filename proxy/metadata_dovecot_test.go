package proxy

import (
	"strings"
	"testing"

	"github.com/xapsproxy/xapsproxy/internal/dovecottest"
)

// Dovecot 2.3.19-2.3.21 answers a SETMETADATA entry name outside /private
// and /shared with BAD and goes on parsing; a second error in the same
// command ("Entry value missing" here) trips an assertion and its imap
// process panics. Repeated crashes make Dovecot's master throttle the imap
// service ("throttling for 2 s", then 4, 8, 16 s...), during which nobody's
// login gets an imap process: one account could lock everyone out. The
// proxy refuses such commands, and any SETMETADATA when the server does
// not offer METADATA.
func TestDovecotSetmetadataThatCrashesDovecotNotForwarded(t *testing.T) {
	t.Parallel()
	for _, metadata := range []bool{false, true} {
		opts := dovecottest.Options{}
		if metadata {
			opts.ExtraConfig = metadataConfig
		}
		d, env := dovecotProxy(t, opts, nil)
		c := env.greeted(t)
		c.loginAs("alice", "alicepw")
		want := "x NO [CANNOT] SETMETADATA: the server does not offer METADATA"
		if metadata {
			want = "x BAD SETMETADATA entry names must be under /private/ or /shared/"
		}
		for range 3 {
			c.send(`x SETMETADATA "" (/bad "v" /x)`)
			c.expect(want)
		}
		if metadata {
			c.send(`y SETMETADATA INBOX (/private/comment "v" /shared/comment NIL)`)
			if got := c.readUntilTagged("y"); !strings.HasPrefix(got, "y OK ") {
				t.Fatalf("a valid SETMETADATA: %q", got)
			}
			c.send(`z SETMETADATA "" (/private/x {1}`)
			c.expect("z BAD SETMETADATA values must be quoted strings or NIL through this proxy")
		}
		if strings.Contains(d.Log(), "Panic:") {
			t.Fatalf("a command forwarded by the proxy crashed Dovecot:\n%s", d.Log())
		}
	}
}

// metadataConfig turns Dovecot's METADATA on.
const metadataConfig = "mail_attribute_dict = file:%{home}/dovecot-attributes\nmail_home = @DIR@/home/%u\nprotocol imap {\n  imap_metadata = yes\n}\n"
