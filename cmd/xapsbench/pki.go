package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// pki is a throwaway CA and the files the proxies read: a server
// certificate for 127.0.0.1/localhost (used by xapsproxy and nginx alike)
// and an APNs-shaped client certificate for xapsproxy's [apns] section.
// Keys are ECDSA P-256.
type pki struct {
	caPEM      []byte
	caFile     string // caPEM written out, for xapsproxy's apns ca_file
	serverCert string // PEM leaf certificate (the CA is the clients' root)
	serverKey  string
	apnsPEM    string // certificate and key in one file
}

// apnsTopic is the subject UID of the generated APNs certificate.
const apnsTopic = "com.apple.mail.XServer.bench"

// oidUserID is the subject UID attribute that holds an APNs topic.
func oidUserID() asn1.ObjectIdentifier { return asn1.ObjectIdentifier{0, 9, 2342, 19200300, 100, 1, 1} }

func newPKI(dir string) (*pki, error) {
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("CA key: %w", err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "xapsbench CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	p := &pki{caPEM: pemBlock("CERTIFICATE", caDER), caFile: filepath.Join(dir, "ca.pem")}
	if err := os.WriteFile(p.caFile, p.caPEM, 0o644); err != nil {
		return nil, fmt.Errorf("CA certificate: %w", err)
	}

	server := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "localhost"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	certPEM, keyPEM, err := issue(ca, caKey, server)
	if err != nil {
		return nil, fmt.Errorf("server certificate: %w", err)
	}
	p.serverCert = filepath.Join(dir, "server.pem")
	p.serverKey = filepath.Join(dir, "server.key")
	if err := os.WriteFile(p.serverCert, certPEM, 0o644); err != nil {
		return nil, fmt.Errorf("server certificate: %w", err)
	}
	if err := os.WriteFile(p.serverKey, keyPEM, 0o600); err != nil {
		return nil, fmt.Errorf("server key: %w", err)
	}

	apns := &x509.Certificate{
		SerialNumber: big.NewInt(3),
		Subject: pkix.Name{
			CommonName: "Apple Push Services: " + apnsTopic,
			ExtraNames: []pkix.AttributeTypeAndValue{{Type: oidUserID(), Value: apnsTopic}},
		},
		NotBefore:   now.Add(-time.Hour),
		NotAfter:    now.Add(24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	certPEM, keyPEM, err = issue(ca, caKey, apns)
	if err != nil {
		return nil, fmt.Errorf("APNs certificate: %w", err)
	}
	p.apnsPEM = filepath.Join(dir, "apns.pem")
	if err := os.WriteFile(p.apnsPEM, append(certPEM, keyPEM...), 0o600); err != nil {
		return nil, fmt.Errorf("APNs certificate: %w", err)
	}
	return p, nil
}

// issue signs tmpl with the CA and returns the certificate and a new key,
// both PEM.
func issue(ca *x509.Certificate, caKey *ecdsa.PrivateKey, tmpl *x509.Certificate) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pemBlock("CERTIFICATE", der), pemBlock("PRIVATE KEY", keyDER), nil
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

// pool returns a pool holding only the CA: clients verify the proxies
// against it.
func (p *pki) pool() (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(p.caPEM) {
		return nil, fmt.Errorf("CA certificate: not PEM")
	}
	return pool, nil
}
