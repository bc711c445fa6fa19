package proxy

import (
	"bufio"
	"bytes"
	"io"
	"strings"
	"testing"

	"github.com/xapsproxy/xapsproxy/internal/imapwire"
)

// FuzzXAPPLEPUSHSERVICE parses arbitrary arguments as the proxy does. It
// never crashes; what it accepts is a registration the store and APNs can
// take (a 64-digit lower-case token, version 1 or 2, at least one valid and
// unique mailbox) whose reply reads back as the names registered; and, for
// a line with no literal, parsing and skipping a bad command never reads
// into the next command.
func FuzzXAPPLEPUSHSERVICE(f *testing.F) {
	for _, seed := range []string{
		strings.TrimPrefix(v2Line, "a2 XAPPLEPUSHSERVICE"),
		strings.TrimPrefix(v1Line, "tag1 XAPPLEPUSHSERVICE"),
		` aps-version 2 aps-account-id A aps-device-token 2918390218931890821908309283098109381029309829018310983092892829 mailboxes ("Sent Messages" NIL INBOX inbox &AMQ-pfel)`,
		` aps-version 2 aps-version 2 aps-foo ((x) y) aps-device-token 2918390218931890821908309283098109381029309829018310983092892829 aps-account-id {3+}` + "\r\nabc mailboxes INBOX",
		` aps-version "2\`,
		` NIL 2`,
	} {
		f.Add([]byte(seed))
	}
	const next = "zz NOOP\r\n"
	f.Fuzz(func(t *testing.T, args []byte) {
		in := append(append(append([]byte(nil), args...), "\r\n"...), next...)
		br := bufio.NewReader(bytes.NewReader(in))
		d := imapwire.NewDecoder(nil, br)
		d.MaxLiteral = maxXAPSLiteral
		d.Budget = maxLineLength
		values, mailboxes, err := parseXAPS(d)
		if err != nil {
			if _, err := d.Discard(maxDiscardLiteral); err != nil {
				return
			}
		} else if req, err := validateXAPS(values, mailboxes); err == nil {
			checkRegistration(t, req)
			checkReply(t, req)
		}
		if bytes.ContainsAny(args, "\r\n{") {
			return // literals and line ends make the next command something else
		}
		rest, _ := io.ReadAll(br)
		if string(rest) != next {
			t.Fatalf("after the command, %q is left; want the next command %q", rest, next)
		}
	})
}

func checkRegistration(t *testing.T, req xapsRequest) {
	t.Helper()
	if req.version != "1" && req.version != "2" {
		t.Fatalf("version %q", req.version)
	}
	if !isHex(req.token, 64) {
		t.Fatalf("token %q", req.token)
	}
	if req.accountID == "" || !printable(req.accountID) {
		t.Fatalf("account id %q", req.accountID)
	}
	if len(req.mailboxes) == 0 || len(req.mailboxes) > maxMailboxes {
		t.Fatalf("%d mailboxes", len(req.mailboxes))
	}
	seen := map[string]bool{}
	for _, m := range req.mailboxes {
		if m == "" || strings.ContainsAny(m, "\r\n\x00") || seen[m] || strings.EqualFold(m, "INBOX") && m != "INBOX" {
			t.Fatalf("mailboxes %q", req.mailboxes)
		}
		seen[m] = true
	}
}

// checkReply reads the reply to req as a client would: a "mailbox" line
// naming each registered mailbox exactly, then the topic line and the OK.
func checkReply(t *testing.T, req xapsRequest) {
	t.Helper()
	reply := xapsReply("x", req, testTopic)
	br := bufio.NewReader(strings.NewReader(reply))
	const prefix = `* XAPPLEPUSHSERVICE "mailbox" `
	for _, m := range req.mailboxes {
		line, err := br.ReadString('\n')
		rest, ok := strings.CutPrefix(line, prefix)
		if err != nil || !ok {
			t.Fatalf("reply %q: line %q, want one naming %q", reply, line, m)
		}
		d := imapwire.NewDecoder([]byte(rest), br)
		if got, ok := d.AString(); !ok || got != m || !d.CRLF() {
			t.Fatalf("reply %q names %q (%v), want %q", reply, got, d.Err(), m)
		}
	}
	want := `* XAPPLEPUSHSERVICE aps-version "` + req.version + `" aps-topic "` + testTopic + "\"\r\nx OK XAPPLEPUSHSERVICE completed.\r\n"
	if rest, _ := io.ReadAll(br); string(rest) != want {
		t.Fatalf("reply ends %q, want %q", rest, want)
	}
}
