package contrib_test

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// compose is the part of the Compose format contrib/docker/compose.yaml uses.
type compose struct {
	Name     string
	Services map[string]composeService
	Networks map[string]struct {
		Internal bool
		IPAM     struct {
			Config []struct{ Subnet string }
		} `yaml:"ipam"`
	}
	Volumes map[string]any
	Secrets map[string]struct{ File string }
}

type composeService struct {
	Build struct {
		Context string
	}
	Image     string
	Restart   string
	DependsOn []string `yaml:"depends_on"`
	ReadOnly  bool     `yaml:"read_only"`
	Tmpfs     []string
	CapDrop   []string `yaml:"cap_drop"`
	CapAdd    []string `yaml:"cap_add"`
	Ports     []string
	Volumes   []string
	Secrets   []serviceSecret
	Networks  []string
}

// serviceSecret is a service's secret: "name", or {source, target}.
type serviceSecret struct {
	Source, Target string
}

func (s *serviceSecret) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		s.Source = n.Value
		return nil
	}
	var long struct{ Source, Target string }
	if err := n.Decode(&long); err != nil {
		return err
	}
	*s = serviceSecret(long)
	return nil
}

// path is where the secret is in the container.
func (s serviceSecret) path() string {
	switch {
	case s.Target == "":
		return "/run/secrets/" + s.Source
	case strings.HasPrefix(s.Target, "/"):
		return s.Target
	}
	return "/run/secrets/" + s.Target
}

// composeDir is the directory of the compose file, which its relative
// paths are relative to.
func composeDir(t *testing.T) string { return repo(t, "contrib", "docker") }

func loadCompose(t *testing.T) compose {
	t.Helper()
	var c compose
	dec := yaml.NewDecoder(strings.NewReader(readRepo(t, "contrib", "docker", "compose.yaml")))
	dec.KnownFields(true) // a key this struct does not know is a typo here
	if err := dec.Decode(&c); err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	return c
}

// binds returns a service's bind mounts, container path -> host path (in
// the repository), and fails on a source that does not exist.
func (c compose) binds(t *testing.T, service string) map[string]string {
	t.Helper()
	binds := map[string]string{}
	for _, v := range c.Services[service].Volumes {
		parts := strings.Split(v, ":")
		if len(parts) < 2 {
			t.Fatalf("compose.yaml: %s volume %q: want SOURCE:TARGET[:ro]", service, v)
		}
		src, dst := parts[0], parts[1]
		if !strings.HasPrefix(src, ".") {
			if _, ok := c.Volumes[src]; !ok {
				t.Errorf("compose.yaml: %s mounts volume %q, which volumes: does not declare", service, src)
			}
			continue
		}
		host := filepath.Join(composeDir(t), src)
		if _, err := os.Stat(host); err != nil {
			t.Errorf("compose.yaml: %s mounts %s, not in the repository: %v", service, src, err)
		}
		binds[dst] = host
	}
	return binds
}

// secretPaths returns a service's secrets, container path -> name.
func (c compose) secretPaths(t *testing.T, service string) map[string]string {
	t.Helper()
	paths := map[string]string{}
	for _, s := range c.Services[service].Secrets {
		if _, ok := c.Secrets[s.Source]; !ok {
			t.Errorf("compose.yaml: %s uses secret %q, which secrets: does not declare", service, s.Source)
		}
		paths[s.path()] = s.Source
	}
	return paths
}

// TestComposeFile checks compose.yaml's shape: what is published, what is
// internal, and that everything it mounts is in the repository (or, for
// secrets, under ./secrets, which git and the image build leave out).
func TestComposeFile(t *testing.T) {
	c := loadCompose(t)
	if got := slices.Sorted(maps.Keys(c.Services)); !slices.Equal(got, []string{"dovecot", "xapsproxy"}) {
		t.Fatalf("services %v, want dovecot and xapsproxy", got)
	}
	xp, dc := c.Services["xapsproxy"], c.Services["dovecot"]
	if want := []string{"993:993", "143:143", "127.0.0.1:9143:9143"}; !slices.Equal(xp.Ports, want) {
		t.Errorf("xapsproxy publishes %v, want %v (the admin port on loopback, the events port not at all)", xp.Ports, want)
	}
	if !xp.ReadOnly || !slices.Equal(xp.CapDrop, []string{"ALL"}) || !slices.Equal(xp.CapAdd, []string{"NET_BIND_SERVICE"}) {
		t.Errorf("xapsproxy: read_only %v, cap_drop %v, cap_add %v; want true, ALL, NET_BIND_SERVICE", xp.ReadOnly, xp.CapDrop, xp.CapAdd)
	}
	if len(dc.Ports) != 0 {
		t.Errorf("dovecot publishes %v: it must be reachable from the backend network only", dc.Ports)
	}
	for name, s := range c.Services {
		if _, err := os.Stat(filepath.Join(composeDir(t), s.Build.Context, "Dockerfile")); err != nil {
			t.Errorf("%s: build context %q has no Dockerfile: %v", name, s.Build.Context, err)
		}
	}
	if !c.Networks["backend"].Internal {
		t.Error("network backend is not internal: Dovecot would have a way out")
	}
	if !slices.Equal(dc.Networks, []string{"backend"}) {
		t.Errorf("dovecot is on networks %v, want backend only", dc.Networks)
	}
	if !slices.Contains(xp.Networks, "backend") || !slices.Contains(xp.Networks, "default") {
		t.Errorf("xapsproxy is on networks %v, want default (APNs, its ports) and backend (Dovecot)", xp.Networks)
	}
	for name, s := range c.Secrets {
		if !strings.HasPrefix(s.File, "./secrets/") {
			t.Errorf("secret %s is %q, not under ./secrets/ (ignored by git and .dockerignore)", name, s.File)
		}
	}
	for _, ignore := range []string{".gitignore", ".dockerignore"} {
		if !regexp.MustCompile(`(?m)^/?contrib/docker/secrets/?$`).MatchString(readRepo(t, ignore)) {
			t.Errorf("%s does not leave out contrib/docker/secrets", ignore)
		}
	}

	// xapsproxy: the image's volume and the path its CMD reads.
	final := finalStage(t)
	volume := jsonArgs(t, "VOLUME", final.one(t, "VOLUME"))[0]
	cmd := jsonArgs(t, "CMD", final.one(t, "CMD"))
	configPath := cmd[len(cmd)-1]
	binds := c.binds(t, "xapsproxy")
	if binds[configPath] != filepath.Join(composeDir(t), "config.toml") {
		t.Errorf("xapsproxy mounts %v; want ./config.toml at %s, where the image's CMD reads it", binds, configPath)
	}
	if !slices.Contains(xp.Volumes, "xapsproxy-data:"+volume) {
		t.Errorf("xapsproxy's volumes %v do not put a named volume at the image's VOLUME %s", xp.Volumes, volume)
	}
	c.secretPaths(t, "xapsproxy")

	// dovecot: the configuration, and the snippet and script from
	// contrib/dovecot at the paths the configuration names.
	binds = c.binds(t, "dovecot")
	for dst, src := range map[string]string{
		"/etc/dovecot/dovecot.conf":             filepath.Join(composeDir(t), "dovecot", "dovecot.conf"),
		"/etc/dovecot/conf.d/95-xapsproxy.conf": repo(t, "contrib", "dovecot", "95-xapsproxy.conf"),
		"/etc/dovecot/xapsproxy.lua":            repo(t, "contrib", "dovecot", "xapsproxy.lua"),
	} {
		if binds[dst] != src {
			t.Errorf("dovecot mounts %q at %s, want %s", binds[dst], dst, src)
		}
	}
	secrets := c.secretPaths(t, "dovecot")
	for _, file := range fileReferences(t, binds) {
		if _, ok := binds[file]; !ok && secrets[file] == "" {
			t.Errorf("Dovecot's configuration reads %s, which compose.yaml does not mount", file)
		}
	}
	conf := readRepo(t, "contrib", "docker", "dovecot", "dovecot.conf")
	subnet := c.Networks["backend"].IPAM.Config
	if len(subnet) != 1 || !regexp.MustCompile(`(?m)^login_trusted_networks = `+regexp.QuoteMeta(subnet[0].Subnet)+`$`).MatchString(conf) {
		t.Errorf("dovecot.conf's login_trusted_networks is not the backend network's subnet %v", subnet)
	}
}

// fileReferences lists the files Dovecot's configuration reads when it is
// parsed: each !include and each "<FILE" value, in the mounted files.
func fileReferences(t *testing.T, binds map[string]string) []string {
	t.Helper()
	re := regexp.MustCompile(`(?m)^\s*(?:!include(?:_try)? |[a-z_]+ = <)(/\S+)`)
	var files []string
	for dst, src := range binds {
		if !strings.HasSuffix(dst, ".conf") {
			continue
		}
		data, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range re.FindAllStringSubmatch(string(data), -1) {
			files = append(files, m[1])
		}
	}
	if len(files) < 2 {
		t.Fatalf("found %v in Dovecot's configuration, want at least the snippet and the events secret", files)
	}
	return files
}

// writeSecrets writes test values for the secrets a service uses into dir,
// one file per secret name, mode 0600, and returns container path -> file.
func writeSecrets(t *testing.T, c compose, service, dir string, values map[string][]byte) map[string]string {
	t.Helper()
	files := map[string]string{}
	for path, name := range c.secretPaths(t, service) {
		value, ok := values[name]
		if !ok {
			t.Fatalf("no test value for secret %s", name)
		}
		file := filepath.Join(dir, name)
		if err := os.WriteFile(file, value, 0o600); err != nil {
			t.Fatal(err)
		}
		files[path] = file
	}
	return files
}

// rewrite replaces container paths by host paths in text, longest first.
func rewrite(text string, paths map[string]string) string {
	keys := slices.Sorted(maps.Keys(paths))
	slices.SortStableFunc(keys, func(a, b string) int { return len(b) - len(a) })
	for _, k := range keys {
		text = strings.ReplaceAll(text, k, paths[k])
	}
	return text
}

func mustWrite(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(fmt.Errorf("write %s: %w", path, err))
	}
}
