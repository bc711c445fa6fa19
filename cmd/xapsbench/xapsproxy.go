package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// buildXapsproxy builds ./cmd/xapsproxy of the module at root into dir, as
// an operator would, so that the proxy runs as its own process (and its RSS
// is its own). It returns the binary and `go version` of the toolchain.
func buildXapsproxy(ctx context.Context, root, dir string) (bin, goVersion string, err error) {
	bin = filepath.Join(dir, "xapsproxy")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/xapsproxy")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", "", fmt.Errorf("go build ./cmd/xapsproxy: %w\n%s", err, out)
	}
	out, err := exec.CommandContext(ctx, "go", "version").Output()
	if err != nil {
		return "", "", fmt.Errorf("go version: %w", err)
	}
	return bin, strings.TrimSpace(string(out)), nil
}

// apnsEndpoint is where an instance sends pushes: the bench's fake APNs
// (see apnsfake.go), trusted through the bench's CA. The zero value is an
// endpoint nobody calls, for instances where no device registers.
type apnsEndpoint struct {
	url    string
	caFile string
}

// instance is what differs between the bench's xapsproxy processes.
type instance struct {
	backend string       // the IMAP server's address
	apns    apnsEndpoint // where pushes go
	admin   bool         // serve /healthz and /metrics on a free loopback port
	// watch are extra lines for the [watch] section, e.g.
	// "max_concurrent_logins = 16".
	watch []string
	// events, when set, is the [events] listener's address: Dovecot's own
	// events, with eventsSecret.
	events string
	// store is the database; "" means the instance's own in the run's
	// directory.
	store string
}

// eventsSecret is what the bench's Dovecots and xapsproxys share for
// Dovecot's own events.
const eventsSecret = "xapsbench-events-secret-0123456789"

// xapsproxyConfig is a complete configuration for a benchmark instance:
// TLS on a free loopback port, no connection limits, no admin listener
// unless inst.admin, an APNs certificate shaped like Apple's and the
// endpoint inst.apns.
func xapsproxyConfig(p *pki, storePath string, inst instance) string {
	apns := inst.apns
	if apns.url == "" {
		apns.url = "https://127.0.0.1:9/unused"
	}
	admin := ""
	if inst.admin {
		admin = "127.0.0.1:0"
	}
	watch := ""
	for _, l := range inst.watch {
		watch += l + "\n"
	}
	events := ""
	if inst.events != "" {
		events = fmt.Sprintf("\n[events]\nlisten = %q\nsecret = %q\n", inst.events, eventsSecret)
	}
	return fmt.Sprintf(`# written by xapsbench
[proxy]
listen_tls = "127.0.0.1:0"
cert_file = %q
key_file = %q
max_connections = 0
max_connections_per_ip = 0
login_timeout = "10m"

[backend]
address = %q

[watch]
master_user = "master"
master_password = "masterpw"
%s
[apns]
certificate_file = %q
endpoint = %q
ca_file = %q

[store]
path = %q

[admin]
listen = %q
%s`, p.serverCert, p.serverKey, inst.backend, watch, p.apnsPEM, apns.url, apns.caFile, storePath, admin, events)
}

// proxyProc is a running `xapsproxy serve`.
type proxyProc struct {
	*child
	addr  string // its TLS listener
	admin string // its admin listener, "" when it has none
}

// listeningRE finds the TLS listener in xapsproxy's log line
// `... msg=listening tls=127.0.0.1:PORT`.
func listeningRE() *regexp.Regexp { return regexp.MustCompile(`msg=listening tls=(\S+)`) }

// adminRE finds the admin listener in xapsproxy's log line
// `... msg="admin listening" addr=127.0.0.1:PORT`.
func adminRE() *regexp.Regexp { return regexp.MustCompile(`msg="admin listening" addr=(\S+)`) }

// xapsproxyBuild is how to run the built xapsproxy: the binary, where its
// files go, its certificates, and extra environment (e.g. GOGC=50) for it
// alone.
type xapsproxyBuild struct {
	bin string
	dir string
	pki *pki
	env []string
}

// storePath is the database of the instance called name.
func (b *xapsproxyBuild) storePath(name string) string { return filepath.Join(b.dir, name+".db") }

// start writes dir/name.toml for inst and runs `xapsproxy serve` on it,
// returning once its TLS listener (and its admin listener, if any) is bound:
// the addresses are read from its log, so no port is guessed.
func (b *xapsproxyBuild) start(ctx context.Context, name string, inst instance) (*proxyProc, error) {
	cfgPath := filepath.Join(b.dir, name+".toml")
	storePath := inst.store
	if storePath == "" {
		storePath = b.storePath(name)
	}
	cfg := xapsproxyConfig(b.pki, storePath, inst)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return nil, fmt.Errorf("%s config: %w", name, err)
	}
	pr, pw := io.Pipe()
	cmd := exec.Command(b.bin, "serve", "-config", cfgPath)
	cmd.Env = append(os.Environ(), b.env...)
	cmd.Stderr = pw
	c, err := startChild(name, cmd)
	if err != nil {
		return nil, err
	}
	addrc, adminc := make(chan string, 1), make(chan string, 1)
	go func() {
		// Read the log for the listener lines, keeping everything for
		// diagnostics, until xapsproxy exits.
		res := map[chan string]*regexp.Regexp{addrc: listeningRE(), adminc: adminRE()}
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			c.out.Write(append(sc.Bytes(), '\n'))
			for ch, re := range res {
				if m := re.FindSubmatch(sc.Bytes()); m != nil {
					select {
					case ch <- string(m[1]):
					default:
					}
				}
			}
		}
		io.Copy(c.out, pr)
	}()
	go func() { <-c.done; pw.Close() }()
	p := &proxyProc{child: c}
	timeout := time.After(20 * time.Second)
	for p.addr == "" || (inst.admin && p.admin == "") {
		select {
		case p.addr = <-addrc:
		case p.admin = <-adminc:
		case <-c.done:
			return nil, fmt.Errorf("%s exited at startup (%v):\n%s", name, c.cmd.ProcessState, c.out.String())
		case <-timeout:
			c.stop()
			return nil, fmt.Errorf("%s: listeners not bound after 20s:\n%s", name, c.out.String())
		case <-ctx.Done():
			c.stop()
			return nil, ctx.Err()
		}
	}
	return p, nil
}
