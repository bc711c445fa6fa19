package contrib_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/xapsproxy/xapsproxy/internal/dovecotrun"
	"github.com/xapsproxy/xapsproxy/internal/serverproc"
)

// dovecotEvent is the body xapsproxy.lua posts.
type dovecotEvent struct {
	User   string
	Events []struct{ Mailbox, What string }
}

// TestComposeDovecotServes runs the compose example's Dovecot side on this
// machine's Dovecot 2.3, as its container would: start.sh (which installs
// the passwd-files from the secrets and starts Dovecot) and dovecot.conf
// with contrib/dovecot's snippet and script. What the container gives them
// is mapped into a temporary directory: the mounted files and secrets,
// /srv/mail (owned by uid 5000, as the image makes it), loopback ports for
// 143 and 24, and a stand-in for xapsproxy's events listener at the URL
// dovecot.conf names. Then the master user logs in for a user, as
// xapsproxy's watchers do, and an LMTP delivery reaches the stand-in with
// the events secret.
func TestComposeDovecotServes(t *testing.T) {
	dovecot := need(t, "dovecot", "XAPSPROXY_TEST_DOVECOT")
	if os.Geteuid() != 0 {
		if os.Getenv("XAPSPROXY_TEST_DOVECOT") == "required" {
			t.Fatal("this test runs Dovecot as root, as its container does, and XAPSPROXY_TEST_DOVECOT=required")
		}
		t.Skip("this test runs Dovecot as root, as its container does")
	}
	c := loadCompose(t)
	dir, err := os.MkdirTemp("", "xcd") // short: Dovecot's socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil { // uid 5000 goes through it to the mail
		t.Fatal(err)
	}
	for _, d := range []string{"secrets", "etc", "mail"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chown(filepath.Join(dir, "mail"), 5000, 5000); err != nil {
		t.Fatal(err)
	}

	type post struct {
		method, path, auth string
		body               []byte
	}
	posts := make(chan post, 1)
	stand := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		select {
		case posts <- post{r.Method, r.URL.Path, r.Header.Get("Authorization"), body}:
		default: // the first is the one the test looks at
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer stand.Close()

	ports, err := serverproc.FreePorts(2)
	if err != nil {
		t.Fatal(err)
	}
	imapAddr, lmtpAddr := "127.0.0.1:"+strconv.Itoa(ports[0]), "127.0.0.1:"+strconv.Itoa(ports[1])
	paths := writeSecrets(t, c, "dovecot", filepath.Join(dir, "secrets"), placeholderSecrets())
	paths["/srv/mail"] = filepath.Join(dir, "mail")
	paths["/etc/dovecot/users"] = filepath.Join(dir, "etc", "users")
	paths["/etc/dovecot/master-users"] = filepath.Join(dir, "etc", "master-users")
	paths["http://xapsproxy:9144/dovecot/events"] = stand.URL + "/dovecot/events"
	binds := c.binds(t, "dovecot")
	for dst, src := range binds {
		paths[dst] = src
		if strings.HasSuffix(dst, ".conf") {
			paths[dst] = filepath.Join(dir, filepath.Base(dst))
		}
	}
	for dst, src := range binds {
		if !strings.HasSuffix(dst, ".conf") {
			continue
		}
		text := rewrite(readFile(t, src), paths)
		if dst == "/etc/dovecot/dovecot.conf" {
			text = fmt.Sprintf("base_dir = %s/run\nstate_dir = %s/state\n", dir, dir) +
				mustReplace(t, mustReplace(t, mustReplace(t, text,
					"\nlisten = *\n", "\nlisten = 127.0.0.1\n"),
					"port = 143\n", fmt.Sprintf("port = %d\n", ports[0])),
					"port = 24\n", fmt.Sprintf("port = %d\n", ports[1]))
		}
		mustWrite(t, paths[dst], text)
	}
	start := mustReplace(t, rewrite(readRepo(t, "contrib", "docker", "dovecot", "start.sh"), paths),
		"exec dovecot -F\n", "exec "+dovecot+" -F -c "+paths["/etc/dovecot/dovecot.conf"]+"\n")
	mustWrite(t, filepath.Join(dir, "start.sh"), start)

	var proc serverproc.Process
	var out serverproc.SyncBuffer
	cmd := exec.Command("sh", filepath.Join(dir, "start.sh"))
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := proc.Start(cmd, nil); err != nil {
		t.Fatal(err)
	}
	defer proc.Stop(10 * time.Second)
	if err := proc.WaitReady("dovecot", imapAddr, lmtpAddr, 30*time.Second, 20*time.Millisecond); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}

	for _, f := range []string{"users", "master-users"} {
		fi, err := os.Stat(filepath.Join(dir, "etc", f))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o640 || fi.Sys().(*syscall.Stat_t).Uid != 0 {
			t.Errorf("start.sh installed %s %v, owner %d; want 0640, root", f, fi.Mode(), fi.Sys().(*syscall.Stat_t).Uid)
		}
	}
	// As xapsproxy's watchers log in (watch.master_user = "xapsproxy").
	if err := imapLogin(imapAddr, "alice@example.com*xapsproxy", testMasterPassword); err != nil {
		t.Errorf("master login: %v\n%s", err, out.String())
	}
	if err := imapLogin(imapAddr, "alice@example.com", "alice-password"); err != nil {
		t.Errorf("user login: %v\n%s", err, out.String())
	}
	// The master user cannot log in as a user the passdb does not have
	// (pass = yes; the static userdb alone would take any name). Refused
	// after Dovecot's auth_failure_delay, 2 s.
	if err := imapLogin(imapAddr, "nobody@example.com*xapsproxy", testMasterPassword); err == nil {
		t.Error("the master user logged in as nobody@example.com, who is not in the passdb")
	}

	l, err := dovecotrun.DialLMTP(lmtpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := l.Deliver([]byte("Subject: hello\r\n\r\nhi\r\n"), "alice@example.com"); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	select {
	case p := <-posts:
		if p.method != http.MethodPost || p.path != "/dovecot/events" || p.auth != "Bearer "+testEventsSecret {
			t.Errorf("the hook sent %s %s with Authorization %q, want POST /dovecot/events with the events secret", p.method, p.path, p.auth)
		}
		var ev dovecotEvent
		if err := json.Unmarshal(p.body, &ev); err != nil {
			t.Fatalf("the hook posted %q: %v", p.body, err)
		}
		if ev.User != "alice@example.com" || len(ev.Events) == 0 || ev.Events[0].Mailbox != "INBOX" || ev.Events[0].What != "arrived" {
			t.Errorf("the hook posted %s, want alice@example.com's INBOX arrived", p.body)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("no event from Dovecot within 10 s of the delivery:\n%s", out.String())
	}
	mails, _ := filepath.Glob(filepath.Join(dir, "mail", "alice@example.com", "Maildir", "new", "*"))
	if len(mails) != 1 {
		t.Fatalf("%d messages in alice's Maildir/new, want 1", len(mails))
	}
	if fi, err := os.Stat(mails[0]); err != nil || fi.Sys().(*syscall.Stat_t).Uid != 5000 {
		t.Errorf("the delivered message %s is not uid 5000's (%v)", mails[0], err)
	}
}

// imapLogin logs in on a new connection and logs out.
func imapLogin(addr, user, password string) error {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(conn)
	if _, err := r.ReadString('\n'); err != nil {
		return fmt.Errorf("greeting: %w", err)
	}
	fmt.Fprintf(conn, "a LOGIN %q %q\r\nb LOGOUT\r\n", user, password)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return fmt.Errorf("LOGIN: %w", err)
		}
		if strings.HasPrefix(line, "a ") {
			if !strings.HasPrefix(line, "a OK") {
				return fmt.Errorf("LOGIN %s: %s", user, strings.TrimSpace(line))
			}
			return nil
		}
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// mustReplace replaces old, which must be in s, by new.
func mustReplace(t *testing.T, s, old, new string) string {
	t.Helper()
	if !strings.Contains(s, old) {
		t.Fatalf("%q is not in the file any more; update the test", old)
	}
	return strings.Replace(s, old, new, 1)
}
