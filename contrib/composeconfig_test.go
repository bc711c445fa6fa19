package contrib_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/xapsproxy/xapsproxy/config"
)

// Test values for compose.yaml's secrets; the certificates are only read
// by serve (TestImageServesComposeConfig makes real ones).
const (
	testMasterPassword = "compose-master-password"
	testEventsSecret   = "0123456789abcdef0123456789abcdef"
	testAdminToken     = "fedcba9876543210fedcba9876543210"
)

func placeholderSecrets() map[string][]byte {
	return map[string][]byte{
		"tls_cert":             []byte("certificate\n"),
		"tls_key":              []byte("key\n"),
		"apns_cert":            []byte("certificate and key\n"),
		"master_password":      []byte(testMasterPassword + "\n"),
		"events_secret":        []byte(testEventsSecret + "\n"),
		"admin_token":          []byte(testAdminToken + "\n"),
		"dovecot_master_users": []byte("xapsproxy:{PLAIN}" + testMasterPassword + "\n"),
		"dovecot_users":        []byte("alice@example.com:{PLAIN}alice-password\n"),
	}
}

// TestComposeConfigLoads loads contrib/docker/config.toml as xapsproxy
// serve does in the container, with the files under /run/secrets that
// compose.yaml mounts there put in a temporary directory instead.
func TestComposeConfigLoads(t *testing.T) {
	c := loadCompose(t)
	dir := t.TempDir()
	secrets := writeSecrets(t, c, "xapsproxy", dir, placeholderSecrets())
	text := readRepo(t, "contrib", "docker", "config.toml")
	for _, line := range strings.Split(text, "\n") {
		if _, value, ok := strings.Cut(line, `= "/`); ok && !strings.HasPrefix(strings.TrimSpace(line), "#") {
			path := "/" + strings.TrimSuffix(strings.TrimSpace(value), `"`)
			if strings.HasPrefix(path, "/run/secrets/") && secrets[path] == "" {
				t.Errorf("config.toml names %s, which compose.yaml does not give the xapsproxy service", path)
			}
		}
	}
	path := filepath.Join(dir, "config.toml")
	mustWrite(t, path, rewrite(text, secrets))
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatalf("config.Load: %v", err)
	}

	volume := jsonArgs(t, "VOLUME", finalStage(t).one(t, "VOLUME"))[0]
	for _, c := range []struct{ what, got, want string }{
		{"proxy.listen_tls", cfg.Proxy.ListenTLS, ":993"},
		{"proxy.listen_starttls", cfg.Proxy.ListenSTARTTLS, ":143"},
		{"backend.address", cfg.Backend.Address, "dovecot:143"},
		{"watch.auth", cfg.Watch.Auth, config.AuthMaster},
		{"watch.source", cfg.Watch.Source, config.SourceDovecot},
		{"watch.master_password (from its file)", cfg.Watch.MasterPassword, testMasterPassword},
		{"events.listen", cfg.Events.Listen, ":9144"},
		{"events.secret (from its file)", cfg.Events.Secret, testEventsSecret},
		{"admin.listen", cfg.Admin.Listen, ":9143"},
		{"admin.token (from its file)", cfg.Admin.Token, testAdminToken},
		{"directory of store.path (the image's VOLUME)", filepath.Dir(cfg.Store.Path), volume},
	} {
		if c.got != c.want {
			t.Errorf("%s = %q, want %q", c.what, c.got, c.want)
		}
	}
}

// TestComposeDovecotConfig parses the compose example's Dovecot
// configuration with the snippet from contrib/dovecot, as the dovecot
// service mounts them, with Debian's doveconf (Dovecot 2.3, the version
// that service runs). The paths mounted in the container are mapped to the
// repository's files and to test secrets.
func TestComposeDovecotConfig(t *testing.T) {
	doveconf := need(t, "doveconf", "XAPSPROXY_TEST_DOVECOT")
	c := loadCompose(t)
	dir := t.TempDir()
	paths := writeSecrets(t, c, "dovecot", dir, placeholderSecrets())
	binds := c.binds(t, "dovecot")
	for dst, src := range binds {
		if strings.HasSuffix(dst, ".conf") {
			paths[dst] = filepath.Join(dir, filepath.Base(dst))
		} else {
			paths[dst] = src
		}
	}
	for dst, src := range binds {
		if strings.HasSuffix(dst, ".conf") {
			data, err := os.ReadFile(src)
			if err != nil {
				t.Fatal(err)
			}
			mustWrite(t, paths[dst], rewrite(string(data), paths))
		}
	}
	cmd := exec.Command(doveconf, "-n", "-c", paths["/etc/dovecot/dovecot.conf"])
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil || stderr.Len() > 0 {
		t.Fatalf("doveconf: %v\n%s", err, stderr.String())
	}
	n := string(out)
	for _, want := range []string{
		"auth_master_user_separator = *",
		"xapsproxy_url = http://xapsproxy:9144/dovecot/events",
		"xapsproxy_secret = <" + paths["/etc/xapsproxy/events-secret"],
		"push_notification_driver = lua:file=" + binds["/etc/dovecot/xapsproxy.lua"],
		"mail_plugins = \" mail_lua notify push_notification push_notification_lua\"",
	} {
		if !strings.Contains(n, want) {
			t.Errorf("doveconf -n has no line %q:\n%s", want, n)
		}
	}
	if !strings.Contains(n, "master = yes") {
		t.Errorf("doveconf -n has no master passdb:\n%s", n)
	}
}
