package proxy

import (
	"crypto/tls"
	"fmt"
	"sync/atomic"
	"time"
)

// Certificate is the certificate presented to clients, replaceable while the
// proxy runs (e.g. on SIGHUP after a renewal): sessions that are running keep
// theirs, new ones get the new one.
type Certificate struct {
	certFile, keyFile string
	cur               atomic.Pointer[tls.Certificate]
}

// LoadCertificate reads a PEM certificate chain and its key.
func LoadCertificate(certFile, keyFile string) (*Certificate, error) {
	c := &Certificate{certFile: certFile, keyFile: keyFile}
	if err := c.Reload(); err != nil {
		return nil, err
	}
	return c, nil
}

// Reload reads the files again; on error the current certificate stays.
func (c *Certificate) Reload() error {
	cert, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
	if err != nil {
		return fmt.Errorf("proxy cert_file/key_file: %w", err)
	}
	c.cur.Store(&cert)
	return nil
}

// TLSConfig is the client-facing TLS configuration: TLS 1.2 or newer, with
// the current certificate.
func (c *Certificate) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return c.cur.Load(), nil
		},
	}
}

// NotAfter is when the current certificate (its leaf) expires.
func (c *Certificate) NotAfter() time.Time {
	if cert := c.cur.Load(); cert != nil && cert.Leaf != nil {
		return cert.Leaf.NotAfter
	}
	return time.Time{}
}
