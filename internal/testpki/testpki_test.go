package testpki_test

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"testing"
	"time"

	"github.com/xapsproxy/xapsproxy/internal/testpki"
)

func TestCertificates(t *testing.T) {
	ca := testpki.NewCA(t)
	dir := t.TempDir()

	server := ca.ServerCert(t, "127.0.0.1", "localhost")
	if _, err := server.Leaf.Verify(x509.VerifyOptions{Roots: ca.Pool(), DNSName: "localhost"}); err != nil {
		t.Errorf("server certificate for localhost: %v", err)
	}
	if err := server.Leaf.VerifyHostname("127.0.0.1"); err != nil {
		t.Errorf("server certificate for 127.0.0.1: %v", err)
	}

	client := ca.ClientCert(t, "com.apple.mail.XServer.x")
	if _, err := client.Leaf.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("client certificate: %v", err)
	}
	if cn := client.Leaf.Subject.CommonName; cn != "Apple Push Services: com.apple.mail.XServer.x" {
		t.Errorf("CN %q", cn)
	}
	uid := ""
	for _, n := range client.Leaf.Subject.Names {
		if n.Type.Equal(testpki.OIDUserID()) {
			uid, _ = n.Value.(string)
		}
	}
	if uid != "com.apple.mail.XServer.x" {
		t.Errorf("UID %q", uid)
	}

	if expired := ca.ClientCert(t, "x", testpki.Expired()); !expired.Leaf.NotAfter.Before(time.Now()) {
		t.Errorf("Expired() certificate is valid until %v", expired.Leaf.NotAfter)
	}

	certFile, keyFile := testpki.WritePEM(t, dir, "client", client)
	if _, err := tls.LoadX509KeyPair(certFile, keyFile); err != nil {
		t.Errorf("WritePEM files: %v", err)
	}
	combined := testpki.WriteCombinedPEM(t, dir, "combined", client)
	if _, err := tls.LoadX509KeyPair(combined, combined); err != nil {
		t.Errorf("WriteCombinedPEM file: %v", err)
	}
	data, err := os.ReadFile(ca.WriteCA(t, dir))
	if err != nil || !x509.NewCertPool().AppendCertsFromPEM(data) || string(data) != string(ca.CertPEM()) {
		t.Errorf("WriteCA file unusable: %v", err)
	}
}
