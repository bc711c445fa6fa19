package main

// How serve words its start-up failures: one line that names the
// configuration key, what went wrong and what to do (a config.Error). The
// cause is found with errors.Is and errors.As on what the standard library
// and the store return, never by reading their messages.

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/xapsproxy/xapsproxy/config"
	"github.com/xapsproxy/xapsproxy/proxy"
	"github.com/xapsproxy/xapsproxy/store"
)

// configFileError words a -config file that cannot be read.
func configFileError(path string, err error) error {
	e := config.FileError("-config", path, err)
	if errors.Is(err, fs.ErrNotExist) {
		e.Fix = "give the path of your configuration file (config.example.toml documents every key)"
	}
	return e
}

// listenError words a failure to listen on addr, the value of key.
func listenError(key, addr string, err error) error {
	e := &config.Error{Key: key, Value: strconv.Quote(addr), Err: err, Fix: "check " + key}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		e.Err = errno // the address is shown already
	}
	host, port, _ := net.SplitHostPort(addr) // validated by config
	var dnsErr *net.DNSError
	switch {
	case errors.Is(err, syscall.EADDRINUSE) && key == "admin.listen":
		e.Fix = `another program listens there: pick another port, or set admin.listen = "" to turn the admin listener off`
	case errors.Is(err, syscall.EADDRINUSE):
		e.Fix = "is Dovecot (or another xapsproxy) listening there? Move Dovecot to another port on 127.0.0.1 " +
			"(and point backend.address at it), or pick another port for " + key
	case errors.Is(err, syscall.EACCES) && privilegedPort(port):
		e.Fix = "ports below 1024 need root or CAP_NET_BIND_SERVICE (setcap cap_net_bind_service=+ep " + executable() +
			", or AmbientCapabilities=CAP_NET_BIND_SERVICE in the systemd unit)"
	case errors.Is(err, syscall.EACCES):
		e.Fix = "a security policy of this machine forbids it: pick another port for " + key
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		e.Fix = fmt.Sprintf("%s is not an address of this machine: use one of its addresses, or %q for all of them", host, ":"+port)
	case errors.As(err, &dnsErr):
		e.Err = dnsErr
		e.Fix = fmt.Sprintf("use an IP address or a name this machine resolves, or %q for every address", ":"+port)
	}
	return e
}

// privilegedPort reports whether port (a number or service name) is below
// 1024.
func privilegedPort(port string) bool {
	n, err := net.LookupPort("tcp", port)
	return err == nil && n > 0 && n < 1024
}

// executable is the path of this binary, for commands the operator may
// copy.
func executable() string {
	if exe, err := os.Executable(); err == nil {
		return exe
	}
	return "xapsproxy"
}

// storeError words a failure to open (or lock, or inspect) the store s:
// a SQLite file here, PostgreSQL in postgresError.
func storeError(s config.Store, err error) error {
	if s.IsPostgres() {
		return postgresError(s, err)
	}
	path := s.Path
	e := &config.Error{Key: "store.path", Value: path, Err: err}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		e.Err = pe.Err // the store names the path; the error shows it once
	}
	dir := filepath.Dir(path)
	var locked *store.LockedError
	switch {
	case errors.As(err, &locked):
		e.Err = heldByServe{locked}
		e.Fix = "stop it first, or give this instance its own store.path"
	case errors.Is(err, fs.ErrNotExist):
		e.Fix = fmt.Sprintf("create it (mkdir -p %s) or change store.path", dir)
	case errors.Is(err, fs.ErrPermission):
		e.Fix = fmt.Sprintf("the user xapsproxy runs as (uid %d) must be able to write %s and the database files in it: "+
			"chown them to that user, or change store.path", os.Geteuid(), dir)
	default:
		e.Fix = "point store.path at xapsproxy's own database, or at a new file in an existing directory"
	}
	return e
}

// heldByServe says who holds a store's lock: only serve takes it.
type heldByServe struct{ *store.LockedError }

func (e heldByServe) Error() string {
	if e.PID == 0 {
		return "in use by another xapsproxy serve"
	}
	return fmt.Sprintf("in use by another xapsproxy serve (PID %d)", e.PID)
}

func (e heldByServe) Unwrap() error { return e.LockedError }

// loadCertificate reads proxy.cert_file and proxy.key_file, saying which
// of the two is wrong, and hands them to the proxy.
func loadCertificate(certFile, keyFile string) (*proxy.Certificate, error) {
	certPEM, err := config.ReadFile("proxy.cert_file", certFile)
	if err != nil {
		return nil, err
	}
	keyPEM, err := config.ReadFile("proxy.key_file", keyFile)
	if err != nil {
		return nil, err
	}
	const certFix = "name the PEM certificate chain of the host name clients connect to (from Let's Encrypt: fullchain.pem)"
	first := firstBlock(certPEM, func(typ string) bool { return typ == "CERTIFICATE" })
	if first == nil {
		return nil, &config.Error{Key: "proxy.cert_file", Value: certFile, Err: errors.New("no PEM certificate in it"), Fix: certFix}
	}
	if _, err := x509.ParseCertificate(first.Bytes); err != nil {
		return nil, &config.Error{Key: "proxy.cert_file", Value: certFile, Err: err, Fix: certFix}
	}
	if firstBlock(keyPEM, func(typ string) bool { return strings.HasSuffix(typ, "PRIVATE KEY") }) == nil {
		return nil, &config.Error{Key: "proxy.key_file", Value: keyFile, Err: errors.New("no PEM private key in it"),
			Fix: "name the private key of proxy.cert_file (from Let's Encrypt: privkey.pem)"}
	}
	if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
		return nil, &config.Error{Key: "proxy.key_file", Value: keyFile, Err: err,
			Fix: "name the private key that belongs to the certificate in proxy.cert_file " + certFile}
	}
	cert, err := proxy.LoadCertificate(certFile, keyFile)
	if err != nil { // the files changed since they were read
		return nil, &config.Error{Key: "proxy.cert_file", Value: certFile, Err: err, Fix: "check proxy.cert_file and proxy.key_file"}
	}
	return cert, nil
}

// firstBlock returns the first PEM block of data whose type is wanted.
func firstBlock(data []byte, wanted func(typ string) bool) *pem.Block {
	for {
		var b *pem.Block
		if b, data = pem.Decode(data); b == nil {
			return nil
		}
		if wanted(b.Type) {
			return b
		}
	}
}
