package proxy

import (
	"bytes"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/xapsproxy/xapsproxy/internal/dovecottest"
	"github.com/xapsproxy/xapsproxy/internal/testpki"
)

// mbsyncFolder is one of alice's mailboxes, as mbsync names it on disk.
type mbsyncFolder struct {
	imap  string // the IMAP name (modified UTF-7)
	local string // the maildir under the sync root
}

var mbsyncFolders = []mbsyncFolder{
	{"INBOX", "INBOX"},
	{"Archive", "Archive"},
	{"Sent", "Sent"},
	{"Deep/Nested", "Deep/Nested"},
	{"Entw&APw-rfe", "Entw&APw-rfe"}, // Entwürfe; mbsync 1.4 keeps the IMAP name
}

// mbsync (isync) syncs alice's whole account, several folders both ways,
// once through the proxy's TLS listener and once directly with a second,
// identical Dovecot. Both local maildirs must come out the same (contents
// and flags per folder), and after changes on both sides (a new local
// message, a flag, a deletion, a new message and a flag on the server) a
// second sync must leave both servers and both maildirs the same again.
func TestClientsMbsync(t *testing.T) {
	t.Parallel()
	mbsync := clientBinary(t, "mbsync", "isync")
	viaProxy := dovecottest.Start(t, dovecottest.Options{})
	direct := dovecottest.Start(t, dovecottest.Options{})
	msgs := clientMessages()
	small := func(subject, body string) []byte {
		return []byte("From: Carol <carol@example.com>\r\nTo: alice@example.com\r\nSubject: " + subject + "\r\nMessage-ID: <" +
			strings.ReplaceAll(subject, " ", ".") + "@example.com>\r\n\r\n" + body + "\r\n")
	}
	for _, d := range []*dovecottest.Dovecot{viaProxy, direct} {
		d.Doveadm(t, "mailbox", "create", "-u", "alice", "Archive", "Sent", "Deep/Nested", "Entwürfe")
		c := dialDovecot(t, d, "alice")
		flags := []string{"", `\Seen`, `\Seen \Flagged`, `\Answered`, `\Seen`}
		for i, m := range msgs {
			c.appendMessages("INBOX", flags[i], m.data)
		}
		c.appendMessages("Archive", `\Seen`, small("old news", "* OK [ALERT] not from the server"), small("flag me", "later"))
		c.appendMessages("Archive", `\Seen \Answered`, small("answered", "done"))
		c.appendMessages("Sent", `\Seen`, small("sent 1", "hi"), small("delete me", "oops"))
		c.appendMessages("Deep/Nested", "", small("deep", "down here"))
		c.appendMessages("Entw&APw-rfe", `\Draft`, small("draft", "Entwurf: Grüße"))
	}
	env := clientProxy(t, viaProxy, nil)
	dir := t.TempDir()
	ca := env.ca.WriteCA(t, dir)
	tlsKey := "SSLType"
	if out, _, err := tryClient(t, nil, mbsync, "--version"); err == nil && !regexp.MustCompile(`^isync 1\.[0-4]\.`).Match(out) {
		tlsKey = "TLSType" // isync 1.5 renamed SSLType
	}
	type side struct {
		name  string
		d     *dovecottest.Dovecot
		rc    string // mbsync's config file
		local string // the maildir root
	}
	newSide := func(name string, d *dovecottest.Dovecot, addr, security string) side {
		s := side{name: name, d: d, rc: filepath.Join(dir, name+".mbsyncrc"), local: filepath.Join(dir, name)}
		_, port := splitAddr(t, addr)
		conf := fmt.Sprintf(`IMAPAccount far
Host 127.0.0.1
Port %s
User alice
Pass alicepw
%s
AuthMechs PLAIN LOGIN
Timeout 20

IMAPStore far
Account far

MaildirStore near
Path %s/
Inbox %s/INBOX
SubFolders Verbatim

Channel all
Far :far:
Near :near:
Patterns *
Create Both
Expunge Both
SyncState *
`, port, security, s.local, s.local)
		if err := os.Mkdir(s.local, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(s.rc, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		return s
	}
	sides := []side{
		newSide("proxy", viaProxy, env.tlsAddr, tlsKey+" IMAPS\nCertificateFile "+ca+"\nSystemCertificates no"),
		newSide("direct", direct, direct.IMAPAddr, tlsKey+" None"),
	}
	env2 := []string{"HOME=" + dir} // no ~/.mbsyncrc or other state of the user running the tests
	syncAll := func(round string) {
		t.Helper()
		for _, s := range sides {
			out := runClient(t, env2, mbsync, "-c", s.rc, "-a")
			if testing.Verbose() {
				t.Logf("%s sync, %s: %s", round, s.name, out)
			}
		}
	}
	// compare checks that both maildirs hold the same, that both servers
	// hold the same, and that each maildir holds what its server has.
	compare := func(round string) (local, server map[string][]string) {
		t.Helper()
		var locals, servers, exact, serversExact [2]map[string][]string
		for i, s := range sides {
			exact[i], locals[i] = maildirDigest(t, s.local)
			c := dialDovecot(t, s.d, "alice")
			servers[i], serversExact[i] = map[string][]string{}, map[string][]string{}
			for _, f := range mbsyncFolders {
				servers[i][f.local] = c.mailboxDigest(f.imap, mbsyncNormalise)
				serversExact[i][f.local] = c.mailboxDigest(f.imap, stripXTUID)
			}
		}
		for _, f := range mbsyncFolders {
			if len(exact[0][f.local]) == 0 {
				t.Errorf("%s: %s was not synced", round, f.local)
			}
			if !slices.Equal(exact[0][f.local], exact[1][f.local]) {
				t.Errorf("%s: %s differs locally\nthrough the proxy: %q\ndirectly: %q", round, f.local, exact[0][f.local], exact[1][f.local])
			}
			if !slices.Equal(serversExact[0][f.local], serversExact[1][f.local]) {
				t.Errorf("%s: %s differs on the servers\nthrough the proxy: %q\ndirectly: %q", round, f.local, serversExact[0][f.local], serversExact[1][f.local])
			}
			for i, s := range sides {
				if !slices.Equal(locals[i][f.local], servers[i][f.local]) {
					t.Errorf("%s: %s on %s differs from the server\nlocally: %q\nserver: %q", round, f.local, s.name, locals[i][f.local], servers[i][f.local])
				}
			}
		}
		if len(exact[0]) != len(mbsyncFolders) || len(exact[1]) != len(exact[0]) {
			t.Errorf("%s: local folders %v (proxy), %v (direct), want %d", round, slices.Sorted(maps.Keys(exact[0])), slices.Sorted(maps.Keys(exact[1])), len(mbsyncFolders))
		}
		return locals[0], servers[0]
	}

	// What mbsync sees of the account.
	var lists [2][]byte
	for i, s := range sides {
		lists[i] = runClient(t, env2, mbsync, "-c", s.rc, "--list", "all")
	}
	if !bytes.Equal(lists[0], lists[1]) {
		t.Errorf("mbsync --list through the proxy:\n%s\ndirectly:\n%s", lists[0], lists[1])
	}

	// mbsync does verify the proxy's certificate: with another CA it refuses.
	other := testpki.NewCA(t).WriteCA(t, t.TempDir())
	wrong := newSide("wrong-ca", viaProxy, env.tlsAddr, tlsKey+" IMAPS\nCertificateFile "+other+"\nSystemCertificates no")
	if out, stderr, err := tryClient(t, env2, mbsync, "-c", wrong.rc, "--list", "all"); err == nil || !bytes.Contains(stderr, []byte("certificate")) {
		t.Errorf("mbsync with another CA: %v, stderr %q, stdout %q; want a certificate error", err, stderr, out)
	}

	syncAll("first")
	compare("first sync")
	if t.Failed() {
		return
	}

	// Changes on both sides, the same for both pairs.
	newLocal := []byte("From: Alice <alice@example.com>\nTo: bob@example.com\nSubject: written offline\n\n* BYE\nGr\xc3\xbc\xc3\x9fe\n")
	fromServer := small("arrived meanwhile", "new on the server")
	for _, s := range sides {
		if err := os.WriteFile(filepath.Join(s.local, "INBOX", "cur", "1700000000.offline.localhost:2,S"), newLocal, 0o600); err != nil {
			t.Fatal(err)
		}
		renameFlags(t, filepath.Join(s.local, "Archive"), "Subject: flag me", "FS")
		renameFlags(t, filepath.Join(s.local, "Sent"), "Subject: delete me", "ST")
		c := dialDovecot(t, s.d, "alice")
		c.appendMessages("Deep/Nested", `\Flagged`, fromServer)
		c.send(`s SELECT INBOX`, `st STORE 1 +FLAGS (\Seen \Answered)`)
		c.expectUntil("s OK ")
		c.expectUntil("st OK ")
	}
	// mbsync waits out the second in which a maildir changed (its
	// timestamps have 1 s resolution); the changes were made earlier.
	past := time.Now().Add(-5 * time.Second)
	for _, s := range sides {
		for _, f := range mbsyncFolders {
			for _, sub := range []string{"cur", "new"} {
				if err := os.Chtimes(filepath.Join(s.local, f.local, sub), past, past); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	syncAll("second")
	local, server := compare("second sync")

	// Spot checks: each change made it to the other side.
	wantEntry := func(m map[string][]string, folder string, data []byte, flags string, present bool) {
		t.Helper()
		entry := sha(mbsyncNormalise(data)) + " " + flags
		if slices.Contains(m[folder], entry) != present {
			t.Errorf("%s: %q present=%v, want %v: %q", folder, data[:min(len(data), 60)], !present, present, m[folder])
		}
	}
	wantEntry(server, "INBOX", newLocal, "S", true)
	wantEntry(server, "Archive", small("flag me", "later"), "FS", true)
	wantEntry(server, "Sent", small("delete me", "oops"), "S", false)
	wantEntry(server, "Sent", small("delete me", "oops"), "ST", false)
	wantEntry(local, "Deep/Nested", fromServer, "F", true)
	wantEntry(local, "INBOX", msgs[0].data, "RS", true)
}

// maildirDigest reads the maildirs under root (each folder with a cur
// directory) and returns per folder, sorted, one entry per message: the
// hash of its contents and its flags. Exact is without the X-TUID header
// field only (mbsync's random tracking id); normalised is as by
// mbsyncNormalise, to compare with the server.
func maildirDigest(t *testing.T, root string) (exact, normalised map[string][]string) {
	t.Helper()
	exact, normalised = map[string][]string{}, map[string][]string{}
	err := filepath.WalkDir(root, func(path string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		sub := filepath.Base(filepath.Dir(path))
		if sub != "cur" && sub != "new" {
			return nil
		}
		folder, err := filepath.Rel(root, filepath.Dir(filepath.Dir(path)))
		if err != nil {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		_, flags, _ := strings.Cut(e.Name(), ":2,")
		data = stripXTUID(data)
		exact[folder] = append(exact[folder], sha(data)+" "+flags)
		normalised[folder] = append(normalised[folder], sha(mbsyncNormalise(data))+" "+flags)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []map[string][]string{exact, normalised} {
		for _, v := range m {
			slices.Sort(v)
		}
	}
	return exact, normalised
}

// stripXTUID removes the header field mbsync 1.4 adds to every message it
// copies, to find it again; its value is random.
func stripXTUID(data []byte) []byte {
	for off := 0; off < len(data); {
		n := bytes.IndexByte(data[off:], '\n') + 1
		if n == 0 {
			break
		}
		line := data[off : off+n]
		if len(bytes.TrimRight(line, "\r\n")) == 0 {
			break // the end of the header
		}
		if bytes.HasPrefix(line, []byte("X-TUID: ")) {
			return slices.Concat(data[:off], data[off+n:])
		}
		off += n
	}
	return data
}

// mbsyncNormalise returns a message as mbsync stores it locally and as it
// is on the server alike: without X-TUID, with LF line ends (mbsync
// stores LF locally and sends CRLF to the server).
func mbsyncNormalise(data []byte) []byte {
	return bytes.ReplaceAll(stripXTUID(data), []byte("\r\n"), []byte("\n"))
}

// renameFlags gives the one message in maildir dir containing marker the
// maildir flags flags, as a mail reader would.
func renameFlags(t *testing.T, dir, marker, flags string) {
	t.Helper()
	var found []string
	for _, sub := range []string{"cur", "new"} {
		entries, err := os.ReadDir(filepath.Join(dir, sub))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			p := filepath.Join(dir, sub, e.Name())
			if data, err := os.ReadFile(p); err == nil && bytes.Contains(data, []byte(marker)) {
				found = append(found, p)
			}
		}
	}
	if len(found) != 1 {
		t.Fatalf("%s: %d messages contain %q", dir, len(found), marker)
	}
	base, _, _ := strings.Cut(filepath.Base(found[0]), ":2,")
	if err := os.Rename(found[0], filepath.Join(dir, "cur", base+":2,"+flags)); err != nil {
		t.Fatal(err)
	}
}
