package config

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
)

const minimal = `
[proxy]
listen_tls = "127.0.0.1:993"
cert_file = "cert.pem"
key_file = "key.pem"
[backend]
address = "127.0.0.1:143"
[watch]
master_user = "xaps"
master_password = "pw"
[apns]
certificate_file = "apns.pem"
`

func TestMinimalAndDefaults(t *testing.T) {
	t.Parallel()
	cfg, err := Parse(minimal, "/etc/xapsproxy")
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		Proxy: Proxy{ListenTLS: "127.0.0.1:993", CertFile: "/etc/xapsproxy/cert.pem", KeyFile: "/etc/xapsproxy/key.pem",
			MaxConnections: 10000, MaxConnectionsPerIP: 100, LoginTimeout: time.Minute, IdleTimeout: 35 * time.Minute, WriteTimeout: 5 * time.Minute},
		Backend: Backend{Address: "127.0.0.1:143", TLS: "none", UsernameFormat: "%Lu"},
		Watch:   Watch{Auth: "master", MasterUser: "xaps", MasterPassword: "pw", MasterSeparator: "*", Source: "auto", PollInterval: 2 * time.Minute, CatchUpRate: 50, CatchUpInterval: 6 * time.Hour, MaxConcurrentLogins: 16, ChangeDelay: 30 * time.Second, ChangeInterval: 2 * time.Minute},
		APNS:    APNS{CertificateFile: "/etc/xapsproxy/apns.pem", Endpoint: "production", MailboxHash: true, Concurrency: 500, Connections: 2},
		Store:   Store{Path: "/etc/xapsproxy/xapsproxy.db"},
		Admin:   Admin{Listen: "127.0.0.1:9143"},
		Events:  Events{Listen: "127.0.0.1:9144"},
		Log:     Log{Format: "text", Level: "info"},
	}
	if !reflect.DeepEqual(*cfg, want) {
		t.Errorf("got  %+v\nwant %+v", *cfg, want)
	}
	if got := cfg.APNS.EndpointURL(); got != "https://api.push.apple.com" {
		t.Errorf("EndpointURL = %s", got)
	}
}

func TestPushTuning(t *testing.T) {
	t.Parallel()
	doc := strings.Replace(minimal, `master_password = "pw"`, "master_password = \"pw\"\nchange_delay = \"5s\"", 1)
	doc = strings.Replace(doc, `certificate_file = "apns.pem"`, "certificate_file = \"apns.pem\"\nmailbox_hash = false\nconcurrency = 10000\nconnections = 1", 1)
	cfg, err := Parse(doc, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Watch.ChangeDelay != 5*time.Second || cfg.APNS.MailboxHash {
		t.Errorf("change_delay %v, mailbox_hash %v; want 5s and false", cfg.Watch.ChangeDelay, cfg.APNS.MailboxHash)
	}
	if cfg.APNS.Concurrency != 10000 || cfg.APNS.Connections != 1 {
		t.Errorf("concurrency %d, connections %d; want 10000 and 1", cfg.APNS.Concurrency, cfg.APNS.Connections)
	}
}

func TestErrorsNameTheKey(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, replace, with, want string
	}{
		{"unknown key", `[backend]`, "[backend]\nadress = \"x\"", "unknown key backend.adress — check the spelling and the [section]; config.example.toml lists every key"},
		{"unknown section", `[backend]`, "[bakend]\naddress = \"x\"\n[backend]", "unknown key bakend"},
		{"wrong type", `address = "127.0.0.1:143"`, `address = 143`, "backend.address"},
		{"no listener", `listen_tls = "127.0.0.1:993"`, ``, `proxy.listen_tls: set listen_tls (e.g. ":993") and/or listen_starttls`},
		{"bad listener", `listen_tls = "127.0.0.1:993"`, `listen_tls = "993"`, `proxy.listen_tls: "993" is not host:port`},
		{"no cert", `cert_file = "cert.pem"`, ``, "proxy.cert_file: required"},
		{"negative limit", `cert_file = "cert.pem"`, "cert_file = \"cert.pem\"\nmax_connections_per_ip = -1", "proxy.max_connections_per_ip: must not be negative"},
		{"bad duration", `cert_file = "cert.pem"`, "cert_file = \"cert.pem\"\nlogin_timeout = \"soon\"", `line 5: proxy.login_timeout: invalid duration: "soon"`},
		{"short idle timeout", `cert_file = "cert.pem"`, "cert_file = \"cert.pem\"\nidle_timeout = \"10m\"", "proxy.idle_timeout: 10m0s is below 30m"},
		{"plaintext auth in public", `cert_file = "cert.pem"`, "cert_file = \"cert.pem\"\nlisten_starttls = \":143\"\nallow_plaintext_auth = true", "proxy.allow_plaintext_auth: only allowed when listen_starttls is a loopback address"},
		{"bad proxy protocol network", `cert_file = "cert.pem"`, "cert_file = \"cert.pem\"\nproxy_protocol = [\"10.0.0.5\", \"haproxy\"]", `proxy.proxy_protocol: "haproxy" is neither an IP address nor a network (`},
		{"bad proxy protocol prefix", `cert_file = "cert.pem"`, "cert_file = \"cert.pem\"\nproxy_protocol = [\"10.0.0.0/33\"]", `proxy.proxy_protocol: "10.0.0.0/33" is neither`},
		{"proxy protocol not a list", `cert_file = "cert.pem"`, "cert_file = \"cert.pem\"\nproxy_protocol = \"10.0.0.5\"", `proxy.proxy_protocol`},
		{"no backend", `address = "127.0.0.1:143"`, ``, "backend.address: required"},
		{"bad backend tls", `address = "127.0.0.1:143"`, "address = \"127.0.0.1:143\"\ntls = \"yes\"", `backend.tls: "yes" is not one of none, starttls, implicit`},
		{"ca without tls", `address = "127.0.0.1:143"`, "address = \"127.0.0.1:143\"\nca_file = \"ca.pem\"", `backend.tls: ca_file and server_name need tls = "starttls" or "implicit"`},
		{"captured with a master user", `master_password = "pw"`, "auth = \"captured\"", `watch.master_user: only used with auth = "master" — remove it`},
		{"captured with a master password", `master_user = "xaps"`, "auth = \"captured\"", `watch.master_password: only used with auth = "master"`},
		{"key file with master", `master_password = "pw"`, "master_password = \"pw\"\nsecret_key_file = \"k\"", `watch.secret_key_file: only used with auth = "captured"`},
		{"no master password", `master_password = "pw"`, ``, "watch.master_password: required"},
		{"both passwords", `master_password = "pw"`, "master_password = \"pw\"\nmaster_password_file = \"pwfile\"", "watch.master_password: set master_password or master_password_file, not both"},
		{"missing password file", `master_password = "pw"`, `master_password_file = "nonexistent"`, "/nonexistent: no such file or directory — check the path"},
		{"bad mode", `master_password = "pw"`, "master_password = \"pw\"\nsource = \"poll\"", `watch.source: "poll" is not one of auto, dovecot, notify, idle`},
		{"no logins", `master_password = "pw"`, "master_password = \"pw\"\nmax_concurrent_logins = 0", "watch.max_concurrent_logins: must be at least 1"},
		{"short change delay", `master_password = "pw"`, "master_password = \"pw\"\nchange_delay = \"0s\"", `watch.change_delay: 0s is too short: at least "1s"`},
		{"long change delay", `master_password = "pw"`, "master_password = \"pw\"\nchange_delay = \"2h\"", `watch.change_delay: 2h0m0s is too long: at most "1h"`},
		{"mailbox hash not a bool", `certificate_file = "apns.pem"`, "certificate_file = \"apns.pem\"\nmailbox_hash = \"no\"", "apns.mailbox_hash"},
		{"no apns", `certificate_file = "apns.pem"`, ``, "apns.certificate_file: required"},
		{"bad priority", `certificate_file = "apns.pem"`, "certificate_file = \"apns.pem\"\npriority = 7", "apns.priority: 7 is not one of 0 (no header, the default), 5 or 10"},
		{"no concurrency", `certificate_file = "apns.pem"`, "certificate_file = \"apns.pem\"\nconcurrency = 0", "apns.concurrency: 0 is out of range: 1 to 10000 pushes in flight (default 500)"},
		{"too much concurrency", `certificate_file = "apns.pem"`, "certificate_file = \"apns.pem\"\nconcurrency = 10001", "apns.concurrency: 10001 is out of range"},
		{"no connections", `certificate_file = "apns.pem"`, "certificate_file = \"apns.pem\"\nconnections = 0", "apns.connections: 0 is out of range: 1 to 64 connections to APNs (default 2)"},
		{"too many connections", `certificate_file = "apns.pem"`, "certificate_file = \"apns.pem\"\nconnections = 65", "apns.connections: 65 is out of range"},
		{"token without topic", `certificate_file = "apns.pem"`, "token_key_file = \"k.p8\"\nkey_id = \"K\"\nteam_id = \"T\"", "apns.topic: required with token_key_file"},
		{"both credentials", `certificate_file = "apns.pem"`, "certificate_file = \"apns.pem\"\ntoken_key_file = \"k.p8\"", "apns.certificate_file: set certificate_file or token_key_file, not both"},
		{"bad endpoint", `certificate_file = "apns.pem"`, "certificate_file = \"apns.pem\"\nendpoint = \"http://x\"", `apns.endpoint: "http://x" is not production, development or an https:// URL`},
		{"bad admin", `[apns]`, "[admin]\nlisten = \"nope\"\n[apns]", `admin.listen: "nope" is not host:port`},
		{"admin off loopback without a token", `[apns]`, "[admin]\nlisten = \"0.0.0.0:9143\"\n[apns]", `admin.token: required when admin.listen ("0.0.0.0:9143") is not a loopback address — set token or token_file`},
		{"admin on every address without a token", `[apns]`, "[admin]\nlisten = \":9143\"\n[apns]", `admin.token: required when admin.listen (":9143")`},
		{"short admin token", `[apns]`, "[admin]\ntoken = \"short\"\n[apns]", "admin.token: the secret is 5 bytes, too short — use at least 16"},
		{"both admin tokens", `[apns]`, "[admin]\ntoken = \"0123456789abcdef\"\ntoken_file = \"t\"\n[apns]", "admin.token: set token or token_file, not both"},
		{"missing admin token file", `[apns]`, "[admin]\ntoken_file = \"nonexistent\"\n[apns]", "admin.token_file /"},
		{"short events secret", `[apns]`, "[events]\nsecret = \"0123456789abcde\"\n[apns]", "events.secret: the secret is 15 bytes, too short — use at least 16 letters, digits or -._~+/=, e.g. the output of `openssl rand -hex 32`"},
		{"events secret with a comment sign", `[apns]`, "[events]\nsecret = \"0123456789abcdef#\"\n[apns]", "events.secret: the secret has a character other than letters, digits and -._~+/= (byte 17)"},
		{"both events secrets", `[apns]`, "[events]\nsecret = \"0123456789abcdef\"\nsecret_file = \"s\"\n[apns]", "events.secret: set secret or secret_file, not both"},
		{"missing events secret file", `[apns]`, "[events]\nsecret_file = \"nonexistent\"\n[apns]", "events.secret_file /"},
		{"no events listen", `[apns]`, "[events]\nsecret = \"0123456789abcdef\"\nlisten = \"\"\n[apns]", `events.listen: required with a secret — e.g. "127.0.0.1:9144"`},
		{"bad log format", `[apns]`, "[log]\nformat = \"logfmt\"\n[apns]", `log.format: "logfmt" is not one of "text", "json" (default "text")`},
		{"bad log level", `[apns]`, "[log]\nlevel = \"verbose\"\n[apns]", `log.level: "verbose" is not one of "debug", "info", "warn", "error" (default "info")`},
		{"log level in capitals", `[apns]`, "[log]\nlevel = \"INFO\"\n[apns]", `log.level: "INFO" is not one of`},
		{"bad events listen", `[apns]`, "[events]\nsecret = \"0123456789abcdef\"\nlisten = \"9144\"\n[apns]", `events.listen: "9144" is not host:port`},
	}
	for _, tt := range tests {
		doc := strings.Replace(minimal, tt.replace, tt.with, 1)
		if doc == minimal {
			t.Fatalf("%s: %q not in the document", tt.name, tt.replace)
		}
		_, err := Parse(doc, t.TempDir())
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: err = %v, want it to contain %q", tt.name, err, tt.want)
		}
	}
}

func TestProxyProtocol(t *testing.T) {
	t.Parallel()
	doc := strings.Replace(minimal, `cert_file = "cert.pem"`, "cert_file = \"cert.pem\"\nproxy_protocol = [\"10.0.0.5\", \"10.1.2.3/16\", \"::ffff:192.0.2.1\", \"2001:db8::/32\"]", 1)
	cfg, err := Parse(doc, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range cfg.Proxy.ProxyProtocolPrefixes() {
		got = append(got, p.String())
	}
	want := []string{"10.0.0.5/32", "10.1.0.0/16", "192.0.2.1/32", "2001:db8::/32"}
	if !slices.Equal(got, want) {
		t.Errorf("ProxyProtocolPrefixes = %v, want %v", got, want)
	}
	off, err := Parse(minimal, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if p := off.Proxy.ProxyProtocolPrefixes(); p != nil {
		t.Errorf("unset proxy_protocol: %v, want none", p)
	}
}

func TestCaptured(t *testing.T) {
	t.Parallel()
	doc := strings.Replace(minimal, "master_user = \"xaps\"\nmaster_password = \"pw\"", `auth = "captured"`, 1)
	cfg, err := Parse(doc, "/etc/xapsproxy")
	if err != nil {
		t.Fatal(err)
	}
	// The key file defaults to secret.key beside the store.
	if cfg.Watch.Auth != AuthCaptured || cfg.Watch.SecretKeyFile != "/etc/xapsproxy/secret.key" || cfg.Watch.MasterUser != "" {
		t.Errorf("watch %+v", cfg.Watch)
	}
	doc = strings.Replace(doc, "[store]", "", 1) + "[store]\npath = \"/var/lib/xapsproxy/x.db\"\n"
	if cfg, err = Parse(doc, "/etc/xapsproxy"); err != nil || cfg.Watch.SecretKeyFile != "/var/lib/xapsproxy/secret.key" {
		t.Errorf("with store.path elsewhere: %v, %+v", err, cfg)
	}
	doc = strings.Replace(doc, `auth = "captured"`, "auth = \"captured\"\nsecret_key_file = \"keys/xaps.key\"", 1)
	if cfg, err = Parse(doc, "/etc/xapsproxy"); err != nil || cfg.Watch.SecretKeyFile != "/etc/xapsproxy/keys/xaps.key" {
		t.Errorf("with secret_key_file: %v, %+v", err, cfg)
	}
}

func TestMasterPasswordFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "pw"), []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	doc := strings.Replace(minimal, `master_password = "pw"`, `master_password_file = "pw"`, 1)
	cfg, err := Parse(doc, dir)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Watch.MasterPassword != "s3cret" {
		t.Errorf("password %q", cfg.Watch.MasterPassword)
	}
}

func TestEventsSecret(t *testing.T) {
	t.Parallel()
	cfg, err := Parse(minimal, "/etc/xapsproxy")
	if err != nil || cfg.Events.Enabled() {
		t.Fatalf("no [events]: enabled %v, %v; want off", cfg.Events.Enabled(), err)
	}
	dir := t.TempDir()
	write := func(name, content string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("secret", "0123456789abcdef0123456789abcdef\n")
	write("short", "0123456789\n")
	write("empty", "\n")
	cfg, err = Parse(minimal+"[events]\nsecret_file = \"secret\"\nlisten = \"[::]:9144\"\n", dir)
	if err != nil {
		t.Fatal(err)
	}
	if want := (Events{Listen: "[::]:9144", Secret: "0123456789abcdef0123456789abcdef", SecretFile: filepath.Join(dir, "secret")}); cfg.Events != want || !cfg.Events.Enabled() {
		t.Errorf("events %+v, want %+v", cfg.Events, want)
	}
	cfg, err = Parse(minimal+"[events]\nsecret = \"A-Za-z0.9_~+/abcd==\"\n", dir)
	if err != nil || cfg.Events.Secret != "A-Za-z0.9_~+/abcd==" || cfg.Events.Listen != DefaultEventsListen {
		t.Errorf("bearer token characters: %+v, %v", cfg.Events, err)
	}
	for file, want := range map[string]string{
		"short": "events.secret_file " + filepath.Join(dir, "short") + ": the secret is 10 bytes, too short — ",
		"empty": "events.secret_file " + filepath.Join(dir, "empty") + ": file is empty — write the secret in it",
	} {
		_, err := Parse(minimal+"[events]\nsecret_file = \""+file+"\"\n", dir)
		if err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("%s: %v, want %q", file, err, want)
		}
		if err != nil && strings.Contains(err.Error(), "0123456789") {
			t.Errorf("%s: the error shows the secret: %v", file, err)
		}
	}
}

// The admin token: from the file without its newline, and required only
// off loopback.
func TestAdminToken(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "token"), []byte("0123456789abcdef0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Parse(minimal+"[admin]\nlisten = \"[::]:9143\"\ntoken_file = \"token\"\n", dir)
	if err != nil {
		t.Fatal(err)
	}
	if want := (Admin{Listen: "[::]:9143", Token: "0123456789abcdef0123456789abcdef", TokenFile: filepath.Join(dir, "token")}); cfg.Admin != want {
		t.Errorf("Admin = %+v, want %+v", cfg.Admin, want)
	}
	for _, listen := range []string{"127.0.0.1:9143", "[::1]:9143", "localhost:9143", ""} {
		if _, err := Parse(minimal+"[admin]\nlisten = \""+listen+"\"\n", dir); err != nil {
			t.Errorf("listen %q without a token: %v", listen, err)
		}
	}
	_, err = Parse(minimal+"[admin]\nlisten = \"192.0.2.1:9143\"\n", dir)
	if err == nil || strings.Contains(err.Error(), "\n") || !strings.HasPrefix(err.Error(), "admin.token: required") {
		t.Errorf("listen off loopback without a token: %v, want one line naming admin.token", err)
	}
}

func TestLogConfig(t *testing.T) {
	t.Parallel()
	cfg, err := Parse(minimal, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Log != (Log{Format: "text", Level: "info"}) {
		t.Errorf("default [log] = %+v, want text and info", cfg.Log)
	}
	cfg, err = Parse(strings.Replace(minimal, "[apns]", "[log]\nformat = \"json\"\nlevel = \"warn\"\n[apns]", 1), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Log != (Log{Format: "json", Level: "warn"}) {
		t.Errorf("[log] = %+v, want json and warn", cfg.Log)
	}
}

// commentedKey is a key in config.example.toml left commented out.
var commentedKey = regexp.MustCompile(`^# ([a-z_]+) = ("[^"]*"|[0-9a-z]+)\s*$`)

// config.example.toml documents every key, and nothing else, and parses.
func TestExampleFile(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile("../config.example.toml")
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]map[string]any
	if _, err := toml.Decode(string(data), &doc); err != nil {
		t.Fatal(err)
	}
	var inExample, inStruct []string
	for section, keys := range doc {
		for key := range keys {
			inExample = append(inExample, section+"."+key)
		}
	}
	// Keys that exclude a key set in the example (store.postgres and
	// store.path) are shown commented out: "# key = value".
	section := ""
	for line := range strings.Lines(string(data)) {
		if strings.HasPrefix(line, "[") {
			section = strings.Trim(strings.TrimSpace(line), "[]")
		}
		if m := commentedKey.FindStringSubmatch(line); m != nil {
			inExample = append(inExample, section+"."+m[1])
		}
	}
	ct := reflect.TypeFor[Config]()
	for i := range ct.NumField() {
		sf := ct.Field(i)
		for j := range sf.Type.NumField() {
			inStruct = append(inStruct, sf.Tag.Get("toml")+"."+sf.Type.Field(j).Tag.Get("toml"))
		}
	}
	slices.Sort(inExample)
	slices.Sort(inStruct)
	if !slices.Equal(inExample, inStruct) {
		t.Errorf("config.example.toml has keys\n%v\nthe Config type has\n%v", inExample, inStruct)
	}

	// With its password file in place, the example is a valid configuration.
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "master-password")
	if err := os.WriteFile(pwFile, []byte("pw\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	example := strings.Replace(string(data), "/etc/xapsproxy/master-password", pwFile, 1)
	if _, err := Parse(example, dir); err != nil {
		t.Errorf("config.example.toml: %v", err)
	}
	// So is it with its PostgreSQL line instead of path.
	pg := strings.Replace(example, "\npath = ", "\n# path = ", 1)
	pg = strings.Replace(pg, "\n# postgres = ", "\npostgres = ", 1)
	if cfg, err := Parse(pg, dir); err != nil || !cfg.Store.IsPostgres() {
		t.Errorf("config.example.toml with store.postgres: %v", err)
	}
}

func TestBackendTLSConfig(t *testing.T) {
	t.Parallel()
	if tc, err := (Backend{Address: "imap.example.com:143", TLS: BackendTLSNone}).TLSConfig(); err != nil || tc != nil {
		t.Errorf("tls none: %v, %v", tc, err)
	}
	tc, err := (Backend{Address: "imap.example.com:993", TLS: BackendTLSImplicit}).TLSConfig()
	if err != nil || tc.ServerName != "imap.example.com" || tc.MinVersion != tls.VersionTLS12 || tc.RootCAs != nil {
		t.Errorf("implicit: %+v, %v", tc, err)
	}
	tc, err = (Backend{Address: "10.0.0.2:993", TLS: BackendTLSStartTLS, ServerName: "imap.internal"}).TLSConfig()
	if err != nil || tc.ServerName != "imap.internal" {
		t.Errorf("server_name: %+v, %v", tc, err)
	}
	_, err = (Backend{Address: "a:1", TLS: BackendTLSImplicit, CAFile: "/nonexistent/ca.pem"}).TLSConfig()
	if err == nil || err.Error() != "backend.ca_file /nonexistent/ca.pem: no such file or directory — check the path (a relative one is relative to the directory of the configuration file)" {
		t.Errorf("missing ca_file: %v", err)
	}
	garbage := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(garbage, []byte("not a certificate"), 0o600)
	if _, err = (Backend{Address: "a:1", TLS: BackendTLSImplicit, CAFile: garbage}).TLSConfig(); !errors.Is(err, ErrNoCertificates) || !strings.HasPrefix(err.Error(), "backend.ca_file "+garbage+": no PEM certificates found — ") {
		t.Errorf("garbage ca_file: %v", err)
	}
}

func TestFileError(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.pem")
	_, err := ReadFile("apns.ca_file", missing)
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("errors.Is(%v, fs.ErrNotExist) = false", err)
	}
	var ce *Error
	if !errors.As(err, &ce) || ce.Key != "apns.ca_file" || ce.Value != missing {
		t.Fatalf("err = %#v, want an *Error naming the key and the path", err)
	}
	if want := "apns.ca_file " + missing + ": no such file or directory — check the path"; !strings.HasPrefix(err.Error(), want) {
		t.Errorf("err = %q, want it to start with %q", err, want)
	}
	if _, err := ReadFile("backend.ca_file", dir); err == nil || !strings.HasSuffix(err.Error(), ": is a directory — name a file, not a directory") {
		t.Errorf("directory: err = %v", err)
	}
	if e := (&Error{Key: "k", Err: errors.New("bad")}); e.Error() != "k: bad" {
		t.Errorf("no value, no fix: %q", e.Error())
	}
}

func TestCanonicalUser(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ format, name, want string }{
		{"%u", "Alice@Example.com", "Alice@Example.com"},
		{"%Lu", "Alice@Example.com", "alice@example.com"},
		{"", "ALICE", "alice"},
		{"%n", "Alice@Example.com", "Alice"},
		{"%Ln", "Alice@Example.com", "alice"},
		{"%Ln", "alice", "alice"},
		{"%Lu", "ÅSA", "Åsa"},
		{"%Lu", "Al\xffICE", "al\xffice"},
	} {
		if got := (Backend{UsernameFormat: tt.format}).CanonicalUser(tt.name); got != tt.want {
			t.Errorf("%s of %q = %q, want %q", tt.format, tt.name, got, tt.want)
		}
	}
	// Dovecot 2.4's way of writing them means the same.
	for format, want := range map[string]string{
		"%{user}": "%u", "%{user | lower}": "%Lu", "%{user|username}": "%n",
		"%{user | username | lower}": "%Ln", "%{user | lower | username}": "%Ln",
	} {
		doc := strings.Replace(minimal, "[backend]\n", "[backend]\nusername_format = \""+format+"\"\n", 1)
		cfg, err := Parse(doc, "/etc/xapsproxy")
		if err != nil {
			t.Errorf("username_format %q: %v", format, err)
		} else if cfg.Backend.UsernameFormat != want {
			t.Errorf("username_format %q became %q, want %s", format, cfg.Backend.UsernameFormat, want)
		}
	}
	doc := strings.Replace(minimal, "[backend]\n", "[backend]\nusername_format = \"%d\"\n", 1)
	if _, err := Parse(doc, "/etc/xapsproxy"); err == nil || !strings.Contains(err.Error(), "backend.username_format") {
		t.Errorf("username_format %%d: %v", err)
	}
}

// A file holding the events secret or the master password that every local
// user may read gives them what it protects: with the events secret,
// anyone can post events for any user (a made-up UIDNEXT silences a
// mailbox's pushes); with the master password, log in as anyone.
func TestSecretFilesOpenToOthersRefused(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, tt := range []struct {
		key, doc string
	}{
		{"events.secret_file", minimal + "[events]\nsecret_file = \"s\"\n"},
		{"admin.token_file", minimal + "[admin]\ntoken_file = \"s\"\n"},
		{"watch.master_password_file", strings.Replace(minimal, `master_password = "pw"`, `master_password_file = "s"`, 1)},
	} {
		for _, mode := range []os.FileMode{0o644, 0o604, 0o602, 0o601} {
			path := filepath.Join(dir, "s")
			os.Remove(path)
			if err := os.WriteFile(path, []byte("0123456789abcdef0123456789abcdef\n"), mode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, mode); err != nil { // whatever the umask
				t.Fatal(err)
			}
			_, err := Parse(tt.doc, dir)
			want := fmt.Sprintf("%s %s: is open to others (mode %04o) — chmod o-rwx %s", tt.key, path, mode, path)
			if err == nil || !strings.HasPrefix(err.Error(), want) {
				t.Errorf("mode %04o: %v, want %q", mode, err, want)
			}
			if err != nil && strings.Contains(err.Error(), "0123456789") {
				t.Errorf("the error shows the secret: %v", err)
			}
		}
		// Its owner and group may read it.
		path := filepath.Join(dir, "s")
		if err := os.Chmod(path, 0o640); err != nil {
			t.Fatal(err)
		}
		if _, err := Parse(tt.doc, dir); err != nil {
			t.Errorf("%s mode 0640: %v", tt.key, err)
		}
	}
}
