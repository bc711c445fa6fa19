package main

// The checks of what serve opens on this machine: the store, the key of
// captured passwords, the proxy's certificate and the listen addresses.

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/xapsproxy/xapsproxy/config"
	"github.com/xapsproxy/xapsproxy/credential"
	"github.com/xapsproxy/xapsproxy/store"
)

// checkStore checks that serve can create or open the store: its
// directory exists and is writable, and the database, if there is one,
// is xapsproxy's at a schema version this binary can migrate. It reads
// the registered accounts for the later checks, and whether a serve holds
// the lock, without taking it.
func (c *checker) checkStore(ctx context.Context) {
	if c.cfg.Store.IsPostgres() {
		c.checkPostgres(ctx)
		return
	}
	path := c.cfg.Store.Path
	abs, err := filepath.Abs(path)
	if err != nil {
		c.r.fail(storeError(c.cfg.Store, err))
		return
	}
	dir := filepath.Dir(abs)
	if fi, err := os.Stat(dir); err != nil {
		c.r.fail(storeError(c.cfg.Store, fmt.Errorf("directory %s: %w", dir, err)))
		return
	} else if !fi.IsDir() {
		c.r.fail(storeError(c.cfg.Store, fmt.Errorf("%s is not a directory", dir)))
		return
	}
	f, err := os.CreateTemp(dir, ".xapsproxy-check-*")
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		c.r.fail(storeError(c.cfg.Store, fmt.Errorf("cannot create a file in %s: %w", dir, err)))
		return
	}
	f.Close()
	os.Remove(f.Name())

	c.servePID = -1
	held, pid, err := store.LockHolder(path)
	switch {
	case err != nil:
		c.r.note("store %s: cannot tell whether a serve is running on it (%v)", path, err)
	case held:
		c.serving, c.servePID = true, pid
		c.r.note("store %s: a serve is running on it (PID %d holds %s); check reads beside it", path, pid, store.LockPath(path))
	}

	if _, err := os.Stat(abs); errors.Is(err, fs.ErrNotExist) {
		c.r.ok("store %s: directory writable; no database yet (serve creates it); 0 accounts", path)
		return
	}
	info, err := store.Inspect(ctx, path)
	if err != nil {
		c.r.fail(storeError(c.cfg.Store, err))
		return
	}
	switch latest := store.SchemaVersion(); {
	case info.Version > latest:
		c.r.fail(&config.Error{Key: "store.path", Value: path,
			Err: fmt.Errorf("schema version %d is newer than this xapsproxy supports (%d)", info.Version, latest),
			Fix: "a newer xapsproxy wrote it: run that version (or newer), or restore a backup made for this one"})
	case info.Version < latest:
		c.r.ok("store %s: writable; schema version %d (serve migrates it to %d when it starts)", path, info.Version, latest)
	default:
		c.store = info
		c.r.ok("store %s: writable; schema version %d; %s, %s", path, info.Version,
			plural(len(info.Users), "account"), plural(info.Devices, "device"))
	}
}

// checkProxyCertificate loads proxy.cert_file and proxy.key_file as serve
// does and looks at the certificate clients will be shown.
func (c *checker) checkProxyCertificate() {
	file := c.cfg.Proxy.CertFile
	if _, err := loadCertificate(file, c.cfg.Proxy.KeyFile); err != nil {
		c.r.fail(err)
		return
	}
	data, err := os.ReadFile(file)
	if err != nil {
		c.r.fail(config.FileError("proxy.cert_file", file, err))
		return
	}
	var chain []*x509.Certificate
	for block, rest := pem.Decode(data); block != nil; block, rest = pem.Decode(rest) {
		if cert, err := x509.ParseCertificate(block.Bytes); block.Type == "CERTIFICATE" && err == nil {
			chain = append(chain, cert)
		}
	}
	leaf := chain[0] // loadCertificate found one
	var names []string
	names = append(names, leaf.DNSNames...)
	for _, ip := range leaf.IPAddresses {
		names = append(names, ip.String())
	}
	left := leaf.NotAfter.Sub(c.now)
	until := leaf.NotAfter.UTC().Format("2006-01-02")
	if left <= 0 {
		c.r.fail(&config.Error{Key: "proxy.cert_file", Value: file, Err: fmt.Errorf("the certificate expired on %s", until),
			Fix: "renew it (certbot renew), then send serve SIGHUP to reload it"})
		return
	}
	if len(names) == 0 {
		c.r.warn("proxy.cert_file %s: the certificate covers no host name (no subjectAltName; CN %q): iPhone Mail refuses it — get one for the name clients connect to", file, leaf.Subject.CommonName)
	} else {
		c.r.ok("proxy.cert_file %s: covers %s; valid until %s", file, strings.Join(names, ", "), until)
	}
	if left < expiryWarning {
		c.r.warn("proxy.cert_file %s: the certificate expires %s (%s): renew it (certbot renew), then send serve SIGHUP to reload it", file, days(left), until)
	}
	intermediates := x509.NewCertPool()
	for _, cert := range chain[1:] {
		intermediates.AddCert(cert)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Intermediates: intermediates, CurrentTime: c.now}); err != nil {
		c.r.warn("proxy.cert_file %s: not trusted by this machine's CA certificates (%v): iPhone Mail warns its users about it unless they trust it by hand — use one from a public CA such as Let's Encrypt, with its full chain (fullchain.pem)", file, err)
	}
}

// checkListeners binds each listen address serve would bind, and closes
// it at once.
func (c *checker) checkListeners() {
	listens := []struct{ key, addr string }{
		{"proxy.listen_tls", c.cfg.Proxy.ListenTLS},
		{"proxy.listen_starttls", c.cfg.Proxy.ListenSTARTTLS},
		{"admin.listen", c.cfg.Admin.Listen},
	}
	if c.cfg.Events.Secret != "" {
		listens = append(listens, struct{ key, addr string }{"events.listen", c.cfg.Events.Listen})
	}
	for _, l := range listens {
		if l.addr == "" {
			continue
		}
		ln, err := net.Listen("tcp", l.addr)
		switch {
		case err == nil:
			ln.Close()
			c.r.ok("%s %q: free to listen on", l.key, l.addr)
		case errors.Is(err, syscall.EADDRINUSE) && c.serving:
			c.r.note("%s %q: in use, presumably by the running serve (PID %d)", l.key, l.addr, c.servePID)
		default:
			c.r.fail(listenError(l.key, l.addr, err))
		}
	}
	if nets := c.cfg.Proxy.ProxyProtocolPrefixes(); len(nets) > 0 {
		list := make([]string, len(nets))
		for i, n := range nets {
			list[i] = n.String()
		}
		c.r.note("proxy.proxy_protocol: connections from %s must start with a PROXY header and are served as the client it names; others are served as themselves, and closed if they send one", strings.Join(list, ", "))
	}
}

// checkSecretKey reads watch.secret_key_file (auth = "captured") as serve
// does, except that a missing one is left for serve to create.
func (c *checker) checkSecretKey() {
	w := c.cfg.Watch
	if w.Auth != config.AuthCaptured {
		return
	}
	if _, err := os.Lstat(w.SecretKeyFile); errors.Is(err, fs.ErrNotExist) {
		dir := filepath.Dir(w.SecretKeyFile)
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
			c.r.fail(&config.Error{Key: "watch.secret_key_file", Value: w.SecretKeyFile, Err: fmt.Errorf("directory %s does not exist", dir),
				Fix: fmt.Sprintf("create it (mkdir -p %s), or change watch.secret_key_file", dir)})
			return
		}
		c.r.ok("watch.secret_key_file %s: does not exist yet (serve creates it)", w.SecretKeyFile)
		return
	}
	if _, err := credential.LoadKey(w.SecretKeyFile); err != nil {
		c.r.fail(err)
		return
	}
	c.r.ok("watch.secret_key_file %s: a usable key", w.SecretKeyFile)
}
