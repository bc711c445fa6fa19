// Package testpki makes throw-away X.509 material for tests: a CA, server
// certificates for fake servers, APNs-like client certificates (topic in the
// subject UID), and the PEM files the product reads. Keys are ECDSA P-256 so
// that tests stay fast. Every helper takes a testing.TB and fails the test on
// error, so callers never check errors.
package testpki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// OIDUserID returns the subject UID attribute (0.9.2342.19200300.100.1.1)
// that holds the topic of an APNs provider certificate.
func OIDUserID() asn1.ObjectIdentifier { return asn1.ObjectIdentifier{0, 9, 2342, 19200300, 100, 1, 1} }

// OIDAPNsTopics returns Apple's extension (1.2.840.113635.100.6.3.6) listing
// the topics a newer provider certificate may push to.
func OIDAPNsTopics() asn1.ObjectIdentifier {
	return asn1.ObjectIdentifier{1, 2, 840, 113635, 100, 6, 3, 6}
}

// CA is a test certificate authority.
type CA struct {
	cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	certPEM []byte
}

// NewCA makes a self-signed CA valid from an hour ago for a day.
func NewCA(t testing.TB) *CA {
	t.Helper()
	key := newKey(t)
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(t),
		Subject:               pkix.Name{CommonName: "xapsproxy test CA", Organization: []string{"xapsproxy tests"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatalf("testpki: create CA: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("testpki: parse CA: %v", err)
	}
	return &CA{cert: cert, key: key, certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// Certificate returns the CA certificate.

// Pool returns a new pool holding only the CA certificate.
func (ca *CA) Pool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	return pool
}

// CertPEM returns the CA certificate in PEM form.
func (ca *CA) CertPEM() []byte { return append([]byte(nil), ca.certPEM...) }

// WriteCA writes the CA certificate to dir/ca.pem and returns the path.
func (ca *CA) WriteCA(t testing.TB, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "ca.pem")
	writeFile(t, path, ca.certPEM)
	return path
}

// ServerCert issues a TLS server certificate for hosts: IP SANs for IP
// addresses, DNS SANs otherwise. It is valid from an hour ago for a day.
func (ca *CA) ServerCert(t testing.TB, hosts ...string) tls.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: "xapsproxy test server"},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if len(hosts) > 0 {
		tmpl.Subject.CommonName = hosts[0]
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	return ca.issue(t, tmpl)
}

// CertOption adjusts a client certificate before it is signed.
type CertOption func(*x509.Certificate)

// Validity sets the validity period.
func Validity(notBefore, notAfter time.Time) CertOption {
	return func(c *x509.Certificate) { c.NotBefore, c.NotAfter = notBefore, notAfter }
}

// Expired makes a certificate that expired an hour ago.
func Expired() CertOption {
	now := time.Now()
	return Validity(now.Add(-48*time.Hour), now.Add(-time.Hour))
}

// Topics adds Apple's topics extension (1.2.840.113635.100.6.3.6) listing
// topics, encoded as APNs certificates do: a sequence of topic strings, each
// followed by a sequence naming its push types.
func Topics(topics ...string) CertOption {
	return func(c *x509.Certificate) {
		utf8 := func(s string) asn1.RawValue {
			return asn1.RawValue{Class: asn1.ClassUniversal, Tag: asn1.TagUTF8String, Bytes: []byte(s)}
		}
		var elems []asn1.RawValue
		for _, topic := range topics {
			types, err := asn1.Marshal([]asn1.RawValue{utf8("app")})
			if err != nil {
				panic("testpki: encode topics: " + err.Error()) // fixed input: cannot happen
			}
			elems = append(elems, utf8(topic), asn1.RawValue{FullBytes: types})
		}
		value, err := asn1.Marshal(elems)
		if err != nil {
			panic("testpki: encode topics: " + err.Error()) // strings only: cannot happen
		}
		c.ExtraExtensions = append(c.ExtraExtensions, pkix.Extension{Id: OIDAPNsTopics(), Value: value})
	}
}

// ClientCert issues a client certificate shaped like an APNs provider
// certificate: subject UID = uid and CN "Apple Push Services: <uid>". By
// default it is valid from an hour ago for a day.
func (ca *CA) ClientCert(t testing.TB, uid string, opts ...CertOption) tls.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{
		Subject: pkix.Name{
			CommonName:         "Apple Push Services: " + uid,
			OrganizationalUnit: []string{"TESTTEAM01"},
			Organization:       []string{"xapsproxy tests"},
			Country:            []string{"US"},
			ExtraNames:         []pkix.AttributeTypeAndValue{{Type: OIDUserID(), Value: uid}},
		},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	for _, o := range opts {
		o(tmpl)
	}
	return ca.issue(t, tmpl)
}

// issue fills in serial, key and (unless set) validity, and signs tmpl.
func (ca *CA) issue(t testing.TB, tmpl *x509.Certificate) tls.Certificate {
	t.Helper()
	key := newKey(t)
	tmpl.SerialNumber = serial(t)
	if tmpl.NotBefore.IsZero() {
		now := time.Now()
		tmpl.NotBefore, tmpl.NotAfter = now.Add(-time.Hour), now.Add(24*time.Hour)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatalf("testpki: create certificate: %v", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("testpki: parse certificate: %v", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// CertPEM returns the PEM form of the certificate chain of cert.
func CertPEM(cert tls.Certificate) []byte {
	var out []byte
	for _, der := range cert.Certificate {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	return out
}

// KeyPEM returns the private key of cert as a PKCS#8 PEM block.
func KeyPEM(t testing.TB, cert tls.Certificate) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		t.Fatalf("testpki: marshal key: %v", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// WritePEM writes cert to dir/name.crt and its key to dir/name.key (mode
// 0600) and returns both paths.
func WritePEM(t testing.TB, dir, name string, cert tls.Certificate) (certFile, keyFile string) {
	t.Helper()
	certFile = filepath.Join(dir, name+".crt")
	keyFile = filepath.Join(dir, name+".key")
	writeFile(t, certFile, CertPEM(cert))
	writeFile(t, keyFile, KeyPEM(t, cert))
	return certFile, keyFile
}

// WriteCombinedPEM writes cert and its key into the single file dir/name.pem
// (mode 0600) and returns its path.
func WriteCombinedPEM(t testing.TB, dir, name string, cert tls.Certificate) string {
	t.Helper()
	path := filepath.Join(dir, name+".pem")
	writeFile(t, path, append(CertPEM(cert), KeyPEM(t, cert)...))
	return path
}

// WriteP8Key makes a new ECDSA P-256 key, writes it as an APNs-style .p8
// file (PKCS#8 PEM) to dir/name.p8 and returns the key and the path.
func WriteP8Key(t testing.TB, dir, name string) (*ecdsa.PrivateKey, string) {
	t.Helper()
	key := newKey(t)
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatalf("testpki: marshal key: %v", err)
	}
	path := filepath.Join(dir, name+".p8")
	writeFile(t, path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	return key, path
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("testpki: generate key: %v", err)
	}
	return key
}

func serial(t testing.TB) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		t.Fatalf("testpki: serial number: %v", err)
	}
	return n.Add(n, big.NewInt(1))
}

func writeFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatalf("testpki: %v", err)
	}
}
