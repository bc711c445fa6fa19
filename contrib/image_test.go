package contrib_test

import (
	"encoding/json"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/xapsproxy/xapsproxy/internal/testpki"
)

// imageConfig is the part of `podman image inspect` the tests look at.
type imageConfig struct {
	User         string
	Entrypoint   []string
	Cmd          []string
	Volumes      map[string]struct{}
	ExposedPorts map[string]struct{}
	Env          []string
}

// TestImage builds the Dockerfile's final stage and checks the image: who
// it runs as, what it runs, its volume and ports, the files in it, and that
// the binary starts in it.
func TestImage(t *testing.T) {
	p := newPodman(t)
	buildImage(t, p)

	var inspect []struct{ Config imageConfig }
	if err := json.Unmarshal([]byte(p.must("image", "inspect", imageName)), &inspect); err != nil || len(inspect) != 1 {
		t.Fatalf("podman image inspect: %v (%d images)", err, len(inspect))
	}
	cfg := inspect[0].Config
	if cfg.User != "65532:65532" {
		t.Errorf("User = %q, want 65532:65532 (numeric: scratch has no /etc/passwd)", cfg.User)
	}
	if !slices.Equal(cfg.Entrypoint, []string{"/xapsproxy"}) {
		t.Errorf("Entrypoint = %q, want [/xapsproxy]", cfg.Entrypoint)
	}
	if want := []string{"serve", "-config", "/etc/xapsproxy/config.toml"}; !slices.Equal(cfg.Cmd, want) {
		t.Errorf("Cmd = %q, want %q", cfg.Cmd, want)
	}
	if got := slices.Sorted(maps.Keys(cfg.Volumes)); !slices.Equal(got, []string{"/var/lib/xapsproxy"}) {
		t.Errorf("Volumes = %v, want /var/lib/xapsproxy", got)
	}
	if got, want := slices.Sorted(maps.Keys(cfg.ExposedPorts)), []string{"143/tcp", "9143/tcp", "9144/tcp", "993/tcp"}; !slices.Equal(got, want) {
		t.Errorf("ExposedPorts = %v, want %v", got, want)
	}

	checkImageFiles(t, p)

	// The binary runs as uid 65532 with its file capability, offline.
	if r := p.runImage(imageName, nil, "version"); r.code != 0 || r.stdout != "xapsproxy "+testVersion+"\n" {
		t.Errorf("run version: exit %d, stdout %q, stderr %q; want %q", r.code, r.stdout, r.stderr, "xapsproxy "+testVersion)
	}
	if r := p.runImage(imageName, nil, "check", "-h"); r.code != 0 || !strings.Contains(r.stdout, "usage: xapsproxy check -config FILE") {
		t.Errorf("run check -h: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	// Without a configuration, the CMD's serve says which file is missing,
	// on one line, and exits 1.
	r := p.runImage(imageName, nil)
	if r.code != 1 || !strings.Contains(r.stderr, "/etc/xapsproxy/config.toml: no such file or directory") || strings.Count(r.stderr, "\n") != 1 {
		t.Errorf("run without a configuration: exit %d, stderr %q; want 1 and one line naming /etc/xapsproxy/config.toml", r.code, r.stderr)
	}
}

// checkImageFiles looks into the image: exactly the binary (with
// cap_net_bind_service) and the CA bundle, and the store directory and
// /tmp, owned by the image's user and closed to others.
func checkImageFiles(t *testing.T, p *podman) {
	t.Helper()
	root := strings.TrimSpace(p.must("image", "mount", imageName))
	t.Cleanup(func() { p.cmd(t.Context(), "image", "unmount", imageName) })
	var files []string
	err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			rel, _ := filepath.Rel(root, path)
			files = append(files, "/"+rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"/etc/ssl/certs/ca-certificates.crt", "/xapsproxy"}; !slices.Equal(files, want) {
		t.Errorf("files in the image: %v, want %v", files, want)
	}
	getcap := need(t, "getcap", "XAPSPROXY_TEST_SERVERS")
	out, err := exec.Command(getcap, filepath.Join(root, "xapsproxy")).Output()
	if err != nil || !strings.Contains(string(out), "cap_net_bind_service=ep") {
		t.Errorf("getcap /xapsproxy: %q, %v; want cap_net_bind_service=ep, which COPY must keep", out, err)
	}
	for _, dir := range []string{"/var/lib/xapsproxy", "/tmp"} {
		fi, err := os.Stat(filepath.Join(root, dir))
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if !fi.IsDir() || st.Uid != 65532 || st.Gid != 65532 || fi.Mode().Perm()&0o022 != 0 {
			t.Errorf("%s: %v, owner %d:%d; want a directory owned by 65532:65532, writable by its owner only", dir, fi.Mode(), st.Uid, st.Gid)
		}
	}
}

// TestImageServesComposeConfig runs the image as compose.yaml's xapsproxy
// service runs it, with its configuration, volume, secrets (test
// certificates, owned by uid 65532 as compose.yaml tells the operator),
// read-only root and capabilities (all dropped but NET_BIND_SERVICE), on
// no network: serve must bind 993 and 143 as uid 65532, write its store
// into the volume, and stop cleanly on SIGTERM. Dovecot and APNs are out of
// reach; serve does not need them to start.
func TestImageServesComposeConfig(t *testing.T) {
	p := newPodman(t)
	buildImage(t, p)
	c := loadCompose(t)
	dir := t.TempDir()
	ca := testpki.NewCA(t)
	server := ca.ServerCert(t, "mail.example.com")
	apns := ca.ClientCert(t, "com.apple.mail.XServer.0f8a1e2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b")
	values := placeholderSecrets()
	values["tls_cert"] = testpki.CertPEM(server)
	values["tls_key"] = testpki.KeyPEM(t, server)
	values["apns_cert"] = append(testpki.CertPEM(apns), testpki.KeyPEM(t, apns)...)
	xp := c.Services["xapsproxy"]
	var flags []string
	if xp.ReadOnly {
		flags = append(flags, "--read-only")
	}
	for _, dir := range xp.Tmpfs {
		flags = append(flags, "--tmpfs", dir)
	}
	for _, capability := range xp.CapDrop {
		flags = append(flags, "--cap-drop", capability)
	}
	for _, capability := range xp.CapAdd {
		flags = append(flags, "--cap-add", capability)
	}
	for path, file := range writeSecrets(t, c, "xapsproxy", dir, values) {
		if err := os.Chown(file, 65532, 65532); err != nil {
			t.Fatal(err)
		}
		flags = append(flags, "-v", file+":"+path+":ro")
	}
	for dst, src := range c.binds(t, "xapsproxy") {
		flags = append(flags, "-v", src+":"+dst+":ro")
	}
	for _, v := range xp.Volumes {
		if !strings.HasPrefix(v, ".") {
			flags = append(flags, "-v", v)
		}
	}
	p.must(append(append(append([]string{"run", "-d", "--name", "xapsproxy"}, p.run...), flags...), imageName)...)

	logs := func() string {
		r := p.cmd(t.Context(), "logs", "xapsproxy")
		return r.stdout + r.stderr
	}
	// [::]:993, or 0.0.0.0:993 on a kernel without IPv6.
	ready := []*regexp.Regexp{regexp.MustCompile(`msg=listening tls=\S+:993\n`),
		regexp.MustCompile(`msg=listening starttls=\S+:143\n`),
		regexp.MustCompile(`msg="admin listening" addr=\S+:9143\n`),
		regexp.MustCompile(`msg="events listening" addr=\S+:9144\n`)}
	deadline := time.Now().Add(30 * time.Second)
	for {
		log := logs()
		if !slices.ContainsFunc(ready, func(re *regexp.Regexp) bool { return !re.MatchString(log) }) {
			break
		}
		running := strings.TrimSpace(p.must("inspect", "--format", "{{.State.Running}}", "xapsproxy"))
		if running != "true" || time.Now().After(deadline) {
			t.Fatalf("serve in the container (running: %s) has not logged %q:\n%s", running, ready, log)
		}
		time.Sleep(50 * time.Millisecond) // polling the log, with a deadline
	}

	p.must("stop", "--time", "30", "xapsproxy")
	if code := strings.TrimSpace(p.must("inspect", "--format", "{{.State.ExitCode}}", "xapsproxy")); code != "0" {
		t.Errorf("serve exited %s after SIGTERM, want 0:\n%s", code, logs())
	}
	if log := logs(); !strings.Contains(log, "shutting down") {
		t.Errorf("serve did not log its shutdown:\n%s", log)
	}
	volume := strings.TrimSpace(p.must("volume", "inspect", "--format", "{{.Mountpoint}}", "xapsproxy-data"))
	fi, err := os.Stat(filepath.Join(volume, "xapsproxy.db"))
	if err != nil {
		t.Fatalf("the store is not in the volume: %v", err)
	}
	if st := fi.Sys().(*syscall.Stat_t); st.Uid != 65532 || fi.Mode().Perm() != 0o600 {
		t.Errorf("xapsproxy.db in the volume: %v, owner %d; want 0600, 65532", fi.Mode(), st.Uid)
	}
}

// TestDockerignore builds a context with the repository's .dockerignore,
// holding what must never reach an image layer (compose's secrets, keys,
// certificates, stores, .git) beside what the build needs, and copies all
// of it into an image: only the sources must arrive.
func TestDockerignore(t *testing.T) {
	p := newPodman(t)
	dir := t.TempDir()
	files := map[string]bool{ // path -> must be in the context
		"go.mod":                                      true,
		"cmd/xapsproxy/main.go":                       true,
		"contrib/dovecot/xapsproxy.lua":               true,
		"contrib/docker/config.toml":                  true,
		"contrib/docker/secrets/tls_key":              false,
		"contrib/docker/secrets/apns_cert":            false,
		"contrib/docker/cluster/secrets/postgres_url": false,
		"etc/privkey.pem":                             false,
		"deep/down/apns.p12":                          false,
		"deep/down/token.p8":                          false,
		"tls.key":                                     false,
		"xapsproxy.db":                                false,
		"var/xapsproxy.db-wal":                        false,
		".git/config":                                 false,
		"xapsproxy":                                   false,
		"contrib/xapsproxy-contrib.test":              false,
	}
	for name := range files {
		mustMkdirWrite(t, filepath.Join(dir, name), name)
	}
	copyFile(t, repo(t, ".dockerignore"), filepath.Join(dir, ".dockerignore"), 0o644)
	mustWrite(t, filepath.Join(dir, "Dockerfile.ctx"), "FROM scratch\nCOPY . /ctx/\n")
	p.must("build", "--pull=never", "-f", filepath.Join(dir, "Dockerfile.ctx"), "-t", "localhost/xapsproxy-context:latest", dir)
	root := strings.TrimSpace(p.must("image", "mount", "localhost/xapsproxy-context:latest"))
	t.Cleanup(func() { p.cmd(t.Context(), "image", "unmount", "localhost/xapsproxy-context:latest") })
	for name, want := range files {
		_, err := os.Stat(filepath.Join(root, "ctx", name))
		if got := err == nil; got != want {
			t.Errorf("%s in the build context: %v, want %v", name, got, want)
		}
	}
}

func mustMkdirWrite(t *testing.T, path, text string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, path, text)
}
