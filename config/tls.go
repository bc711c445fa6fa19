package config

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
)

// BaseTLSConfig is how the backend is verified without reading any file:
// TLS 1.2 or newer, system roots, and ServerName or else the host of Address.
// It returns nil when the backend link is not TLS.
func (b Backend) BaseTLSConfig() *tls.Config {
	if b.TLS == BackendTLSNone || b.TLS == "" {
		return nil
	}
	name := b.ServerName
	if name == "" {
		name, _, _ = net.SplitHostPort(b.Address) // validated to be host:port
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, ServerName: name}
}

// TLSConfig is BaseTLSConfig with the roots of CAFile added, if set.
func (b Backend) TLSConfig() (*tls.Config, error) {
	tc := b.BaseTLSConfig()
	if tc == nil || b.CAFile == "" {
		return tc, nil
	}
	pool, err := CertPool("backend.ca_file", b.CAFile)
	if err != nil {
		return nil, err
	}
	tc.RootCAs = pool
	return tc, nil
}

// ErrNoCertificates means a CA file holds no PEM certificate.
var ErrNoCertificates = errors.New("no PEM certificates found")

// CertPool is the system roots plus the PEM certificates in file, which
// key names. Its errors are Errors.
func CertPool(key, file string) (*x509.CertPool, error) {
	data, err := ReadFile(key, file)
	if err != nil {
		return nil, err
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(data) {
		return nil, &Error{Key: key, Value: file, Err: ErrNoCertificates,
			Fix: "it must hold the CA certificates (-----BEGIN CERTIFICATE-----) that signed the server's certificate"}
	}
	return pool, nil
}
