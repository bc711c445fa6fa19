package contrib_test

import (
	"maps"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/xapsproxy/xapsproxy/config"
)

// cluster is the part of the Compose format contrib/docker/cluster/compose.yaml
// uses: networks per service are a map there (fixed addresses, aliases).
type cluster struct {
	Name     string
	Services map[string]clusterService
	Networks map[string]struct {
		Internal bool
		IPAM     struct {
			Config []struct{ Subnet string }
		} `yaml:"ipam"`
	}
	Volumes map[string]any
	Secrets map[string]struct{ File string }
}

type clusterService struct {
	Build struct {
		Context string
	}
	Image       string
	Restart     string
	DependsOn   []string `yaml:"depends_on"`
	ReadOnly    bool     `yaml:"read_only"`
	Tmpfs       []string
	CapDrop     []string `yaml:"cap_drop"`
	CapAdd      []string `yaml:"cap_add"`
	Ports       []string
	Environment map[string]string
	Volumes     []string
	Secrets     []serviceSecret
	Networks    map[string]struct {
		IPv4Address string `yaml:"ipv4_address"`
		Aliases     []string
	}
}

func clusterDir(t *testing.T) string { return repo(t, "contrib", "docker", "cluster") }

func loadCluster(t *testing.T) cluster {
	t.Helper()
	var c cluster
	dec := yaml.NewDecoder(strings.NewReader(readRepo(t, "contrib", "docker", "cluster", "compose.yaml")))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		t.Fatalf("cluster/compose.yaml: %v", err)
	}
	return c
}

// binds returns a service's bind mounts, container path -> host path.
func (c cluster) binds(t *testing.T, service string) map[string]string {
	t.Helper()
	binds := map[string]string{}
	for _, v := range c.Services[service].Volumes {
		src, rest, ok := strings.Cut(v, ":")
		dst, _, _ := strings.Cut(rest, ":")
		if !ok {
			t.Fatalf("cluster/compose.yaml: %s volume %q: want SOURCE:TARGET[:ro]", service, v)
		}
		if !strings.HasPrefix(src, ".") {
			if _, ok := c.Volumes[src]; !ok {
				t.Errorf("cluster/compose.yaml: %s mounts volume %q, which volumes: does not declare", service, src)
			}
			continue
		}
		host := filepath.Join(clusterDir(t), src)
		if _, err := os.Stat(host); err != nil {
			t.Errorf("cluster/compose.yaml: %s mounts %s, not in the repository: %v", service, src, err)
		}
		binds[dst] = host
	}
	return binds
}

// TestClusterComposeFile checks the cluster example's shape: HAProxy the only
// published service, sending PROXY v2 to both instances at the addresses
// compose gives them; the instances trusting HAProxy's address only; both
// on the store's and Dovecot's network under the name Dovecot posts events
// to; secrets under ./secrets.
func TestClusterComposeFile(t *testing.T) {
	c := loadCluster(t)
	want := []string{"dovecot", "haproxy", "postgres", "xapsproxy-a", "xapsproxy-b"}
	if got := slices.Sorted(maps.Keys(c.Services)); !slices.Equal(got, want) {
		t.Fatalf("services %v, want %v", got, want)
	}
	for name, s := range c.Services {
		for _, p := range s.Ports {
			if name != "haproxy" && !strings.HasPrefix(p, "127.0.0.1:") {
				t.Errorf("%s publishes %s: only HAProxy may be reachable from outside (the instances' admin ports on loopback)", name, p)
			}
		}
		if s.Build.Context == "" {
			continue
		}
		if _, err := os.Stat(filepath.Join(clusterDir(t), s.Build.Context, "Dockerfile")); err != nil {
			t.Errorf("%s: build context %q has no Dockerfile: %v", name, s.Build.Context, err)
		}
	}
	if !strings.HasPrefix(c.Services["postgres"].Image, "docker.io/library/postgres:") {
		t.Errorf("postgres runs %q, want the official postgres image", c.Services["postgres"].Image)
	}
	for _, n := range []string{"balancer", "backend"} {
		if !c.Networks[n].Internal {
			t.Errorf("network %s is not internal", n)
		}
	}
	for name, s := range c.Secrets {
		if !strings.HasPrefix(s.File, "./secrets/") {
			t.Errorf("secret %s is %q, not under ./secrets/", name, s.File)
		}
	}
	for _, ignore := range []string{".gitignore", ".dockerignore"} {
		if !regexp.MustCompile(`(?m)^/?contrib/docker/cluster/secrets/?$`).MatchString(readRepo(t, ignore)) {
			t.Errorf("%s does not leave out contrib/docker/cluster/secrets", ignore)
		}
	}

	// HAProxy's servers are the instances' addresses on "balancer", every
	// one with send-proxy-v2, for both listeners.
	cfg := readRepo(t, "contrib", "docker", "cluster", "haproxy.cfg")
	servers := regexp.MustCompile(`(?m)^\s*server \S+ ([0-9.]+):(\d+) (.*)$`).FindAllStringSubmatch(cfg, -1)
	var addrs []string
	for _, m := range servers {
		if !strings.Contains(m[3], "send-proxy-v2") {
			t.Errorf("haproxy.cfg: server %s:%s without send-proxy-v2", m[1], m[2])
		}
		addrs = append(addrs, m[1]+":"+m[2])
	}
	var wantAddrs []string
	for _, inst := range []string{"xapsproxy-a", "xapsproxy-b"} {
		s := c.Services[inst]
		ip := s.Networks["balancer"].IPv4Address
		wantAddrs = append(wantAddrs, ip+":993", ip+":143")
		if !slices.Contains(s.Networks["backend"].Aliases, "xapsproxy") {
			t.Errorf("%s does not answer to \"xapsproxy\" on backend, where Dovecot posts its events", inst)
		}
		if _, ok := s.Networks["default"]; !ok {
			t.Errorf("%s is not on default: no way to APNs", inst)
		}
		if !s.ReadOnly || !slices.Equal(s.CapDrop, []string{"ALL"}) {
			t.Errorf("%s: read_only %v, cap_drop %v", inst, s.ReadOnly, s.CapDrop)
		}
		if binds := c.binds(t, inst); binds["/etc/xapsproxy/config.toml"] != filepath.Join(clusterDir(t), "config.toml") {
			t.Errorf("%s mounts %v, want ./config.toml at /etc/xapsproxy/config.toml", inst, binds)
		}
	}
	slices.Sort(addrs)
	slices.Sort(wantAddrs)
	if !slices.Equal(addrs, wantAddrs) {
		t.Errorf("haproxy.cfg's servers %v, want the instances' %v", addrs, wantAddrs)
	}
	balancer := c.Services["haproxy"].Networks["balancer"].IPv4Address
	subnet := c.Networks["balancer"].IPAM.Config
	if len(subnet) != 1 || !netip.MustParsePrefix(subnet[0].Subnet).Contains(netip.MustParseAddr(balancer)) {
		t.Errorf("HAProxy's address %s is not in the balancer network %v", balancer, subnet)
	}
	if !regexp.MustCompile(`(?m)^proxy_protocol = \["` + regexp.QuoteMeta(balancer) + `"\]$`).MatchString(readRepo(t, "contrib", "docker", "cluster", "config.toml")) {
		t.Errorf("config.toml's proxy_protocol is not HAProxy's address %s alone", balancer)
	}
	if b := c.binds(t, "dovecot"); b["/etc/dovecot/dovecot.conf"] != filepath.Join(composeDir(t), "dovecot", "dovecot.conf") {
		t.Errorf("dovecot mounts %q, want ../dovecot/dovecot.conf, the one-instance example's", b["/etc/dovecot/dovecot.conf"])
	}
}

// TestClusterConfigLoads loads cluster/config.toml as each instance does,
// with its secrets in a temporary directory.
func TestClusterConfigLoads(t *testing.T) {
	c := loadCluster(t)
	dir := t.TempDir()
	values := placeholderSecrets()
	values["postgres_url"] = []byte("postgres://xapsproxy:pgpw@postgres:5432/xapsproxy?sslmode=disable\n")
	secrets := map[string]string{}
	for _, s := range c.Services["xapsproxy-a"].Secrets {
		value, ok := values[s.Source]
		if !ok {
			t.Fatalf("no test value for secret %s", s.Source)
		}
		file := filepath.Join(dir, s.Source)
		mustWrite(t, file, string(value))
		secrets[s.path()] = file
	}
	text := readRepo(t, "contrib", "docker", "cluster", "config.toml")
	for _, m := range regexp.MustCompile(`"(/run/secrets/[^"]+)"`).FindAllStringSubmatch(text, -1) {
		if secrets[m[1]] == "" {
			t.Errorf("config.toml names %s, which compose.yaml does not give the instances", m[1])
		}
	}
	path := filepath.Join(dir, "config.toml")
	mustWrite(t, path, rewrite(text, secrets))
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatalf("config.Load: %v", err)
	}
	if got := cfg.Proxy.ProxyProtocolPrefixes(); len(got) != 1 || got[0].String() != c.Services["haproxy"].Networks["balancer"].IPv4Address+"/32" {
		t.Errorf("proxy_protocol = %v, want HAProxy's address", got)
	}
	if !cfg.Store.IsPostgres() {
		t.Errorf("the instances' store is %s, want the shared PostgreSQL", cfg.Store.Where())
	}
	if cfg.Backend.Address != "dovecot:143" || !cfg.Backend.ForwardClientIP {
		t.Errorf("backend %q, forward_client_ip %v; want dovecot:143, true", cfg.Backend.Address, cfg.Backend.ForwardClientIP)
	}
}

// TestClusterHAProxyConfig has HAProxy check haproxy.cfg.
func TestClusterHAProxyConfig(t *testing.T) {
	haproxy := need(t, "haproxy", "XAPSPROXY_TEST_SERVERS")
	out, err := exec.Command(haproxy, "-c", "-f", filepath.Join(clusterDir(t), "haproxy.cfg")).CombinedOutput()
	if err != nil {
		t.Fatalf("haproxy -c: %v\n%s", err, out)
	}
}
