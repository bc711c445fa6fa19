package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"
)

const nginxInstallHint = "apt-get install nginx libnginx-mod-mail"

// nginxInstall is what was found of nginx and its mail module.
type nginxInstall struct {
	bin     string
	module  string // ngx_mail_module.so to load; "" when built in
	version string // e.g. "nginx/1.22.1, OpenSSL 3.0.x"
}

// findNginx looks for the nginx binary and its mail module. The error says
// what is missing and how to install it.
func findNginx() (*nginxInstall, error) {
	bin, err := exec.LookPath("nginx")
	if err != nil {
		bin = "/usr/sbin/nginx"
		if _, err := os.Stat(bin); err != nil {
			return nil, fmt.Errorf("nginx not found; install it with: %s", nginxInstallHint)
		}
	}
	out, err := exec.Command(bin, "-V").CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("%s -V: %w", bin, err)
	}
	n := &nginxInstall{bin: bin}
	var parts []string
	for _, line := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(line, "nginx version: "); ok {
			parts = append(parts, v)
		}
		if v, ok := strings.CutPrefix(line, "built with "); ok {
			parts = append(parts, strings.TrimSpace(v))
		}
	}
	n.version = strings.Join(parts, ", ")
	args := string(out)
	switch {
	case strings.Contains(args, "--with-mail=dynamic"):
		for _, p := range []string{
			"/usr/lib/nginx/modules/ngx_mail_module.so",
			"/usr/lib64/nginx/modules/ngx_mail_module.so",
			"/usr/share/nginx/modules/ngx_mail_module.so",
			"/usr/local/nginx/modules/ngx_mail_module.so",
			"/etc/nginx/modules/ngx_mail_module.so",
		} {
			if _, err := os.Stat(p); err == nil {
				n.module = p
				return n, nil
			}
		}
		return nil, fmt.Errorf("nginx's mail module (ngx_mail_module.so) not found; install it with: %s", nginxInstallHint)
	case strings.Contains(args, "--with-mail"):
		return n, nil // built in
	}
	return nil, fmt.Errorf("%s was built without the mail module; install Debian's: %s", bin, nginxInstallHint)
}

// authServer answers nginx's auth_http requests: every login goes to
// backend, where the backend itself checks the password (nginx logs in
// there with the client's credentials).
type authServer struct {
	srv      *http.Server
	addr     string
	requests atomic.Int64
}

func startAuthServer(backend string) (*authServer, error) {
	host, port, err := net.SplitHostPort(backend)
	if err != nil {
		return nil, fmt.Errorf("auth_http backend: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("auth_http listener: %w", err)
	}
	a := &authServer{addr: ln.Addr().String()}
	a.srv = &http.Server{
		ReadHeaderTimeout: 10 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			a.requests.Add(1)
			h := w.Header()
			h.Set("Auth-Status", "OK")
			h.Set("Auth-Server", host)
			h.Set("Auth-Port", port)
			w.WriteHeader(http.StatusOK)
		}),
	}
	go a.srv.Serve(ln)
	return a, nil
}

func (a *authServer) Close() error { return a.srv.Close() }

// nginxProc is a running nginx mail proxy.
type nginxProc struct {
	*child
	addr string
	auth *authServer
	opts nginxOptions
}

// nginxOptions describe one nginx instance.
type nginxOptions struct {
	dir         string // its prefix: config, pid file, error log
	backend     string // where auth_http sends every login
	workers     string // worker_processes
	proxyBuffer string // proxy_buffer; "" = nginx's default
	maxConns    int    // proxied connections it must hold
	pki         *pki
	clientTLS   *tls.Config // to check that it answers
}

// nginxConfig is a mail-only nginx: one IMAP server with implicit TLS on
// addr, the same certificate and key as xapsproxy, TLS 1.2 and 1.3 with
// OpenSSL's default ciphers, and every login sent to the auth server.
func nginxConfig(n *nginxInstall, o nginxOptions, addr, authAddr string) (string, error) {
	var b strings.Builder
	if n.module != "" {
		fmt.Fprintf(&b, "load_module %s;\n", n.module)
	}
	if os.Geteuid() == 0 {
		// Workers drop root; Debian's nobody has group nogroup.
		u, err := user.Lookup("nobody")
		if err != nil {
			return "", fmt.Errorf("nginx user: %w", err)
		}
		g, err := user.LookupGroupId(u.Gid)
		if err != nil {
			return "", fmt.Errorf("nginx group: %w", err)
		}
		fmt.Fprintf(&b, "user %s %s;\n", u.Username, g.Name)
	}
	buffer := ""
	if o.proxyBuffer != "" {
		buffer = "\n    proxy_buffer " + o.proxyBuffer + ";"
	}
	fmt.Fprintf(&b, `daemon off;
master_process on;
worker_processes %s;
worker_rlimit_nofile %d;
pid %s;
error_log %s warn;
events {
    worker_connections %d;
}
mail {
    server_name localhost;
    auth_http %s/auth;
    proxy on;%s
    imap_capabilities "IMAP4rev1" "LITERAL+" "SASL-IR" "ID" "ENABLE" "IDLE";
    server {
        listen %s ssl;
        protocol imap;
        ssl_certificate %s;
        ssl_certificate_key %s;
        ssl_protocols TLSv1.2 TLSv1.3;
    }
}
`, o.workers, 2*o.maxConns+4096, filepath.Join(o.dir, "nginx.pid"), filepath.Join(o.dir, "error.log"),
		2*o.maxConns+1024, authAddr, buffer, addr, o.pki.serverCert, o.pki.serverKey)
	return b.String(), nil
}

// startNginx runs nginx in o.dir in front of o.backend and waits until it
// greets over TLS. A port is picked by listening on :0 and closing again;
// should another process take it first, it retries with a fresh one.
func startNginx(ctx context.Context, n *nginxInstall, o nginxOptions) (*nginxProc, error) {
	if err := os.MkdirAll(o.dir, 0o755); err != nil {
		return nil, fmt.Errorf("nginx directory: %w", err)
	}
	auth, err := startAuthServer(o.backend)
	if err != nil {
		return nil, err
	}
	for attempt := 1; ; attempt++ {
		ng, err := launchNginx(ctx, n, o, auth)
		if err == nil {
			return ng, nil
		}
		if attempt >= 3 || ctx.Err() != nil || !strings.Contains(err.Error(), "Address already in use") {
			auth.Close()
			return nil, err
		}
	}
}

func launchNginx(ctx context.Context, n *nginxInstall, o nginxOptions, auth *authServer) (*nginxProc, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("nginx port: %w", err)
	}
	addr := ln.Addr().String()
	ln.Close()
	conf, err := nginxConfig(n, o, addr, auth.addr)
	if err != nil {
		return nil, err
	}
	confPath := filepath.Join(o.dir, "nginx.conf")
	errLog := filepath.Join(o.dir, "error.log")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		return nil, fmt.Errorf("nginx config: %w", err)
	}
	os.Remove(errLog)
	c, err := startChild("nginx", exec.Command(n.bin, "-p", o.dir+"/", "-c", confPath, "-e", errLog))
	if err != nil {
		return nil, err
	}
	ng := &nginxProc{child: c, addr: addr, auth: auth, opts: o}
	deadline := time.Now().Add(10 * time.Second)
	for {
		conn, err := dialIMAP(ctx, target{name: "nginx", addr: addr, tls: o.clientTLS}, 4096)
		if err == nil {
			conn.Close()
			return ng, nil
		}
		if c.exited() || time.Now().After(deadline) || ctx.Err() != nil {
			c.stop()
			log, _ := os.ReadFile(errLog)
			return nil, fmt.Errorf("nginx did not start (%v): %w\n%s%s", c.cmd.ProcessState, err, log, c.out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// close stops nginx and its auth server.
func (ng *nginxProc) close() {
	ng.stop()
	ng.auth.Close()
}

// pids returns the master and its workers.
func (ng *nginxProc) pids() []int { return withChildren(ng.pid()) }

// describe names the worker setting for the report.
func (ng *nginxProc) describe() string {
	n := len(ng.pids()) - 1
	buffer := ng.opts.proxyBuffer
	if buffer == "" {
		buffer = "default (one page)"
	}
	return fmt.Sprintf("worker_processes %s (%d worker%s), proxy_buffer %s", ng.opts.workers, n, map[bool]string{true: "s"}[n != 1], buffer)
}
