package proxy

import (
	"crypto/x509"
	"os"
	"testing"
	"time"

	"github.com/xapsproxy/xapsproxy/internal/testpki"
)

// NotAfter is the current certificate's, and follows a Reload.
func TestCertificateNotAfterFollowsReload(t *testing.T) {
	ca := testpki.NewCA(t)
	dir := t.TempDir()
	first := ca.ServerCert(t, "localhost")
	certFile, keyFile := testpki.WritePEM(t, dir, "proxy", first)
	c, err := LoadCertificate(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(first.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if got := c.NotAfter(); !got.Equal(leaf.NotAfter) {
		t.Fatalf("NotAfter = %v, want %v", got, leaf.NotAfter)
	}
	renewedUntil := time.Now().Add(90 * 24 * time.Hour).Truncate(time.Second)
	renewed := ca.ClientCert(t, "renewed", testpki.Validity(time.Now().Add(-time.Hour), renewedUntil))
	newCert, newKey := testpki.WritePEM(t, t.TempDir(), "renewed", renewed)
	for _, f := range [][2]string{{newCert, certFile}, {newKey, keyFile}} {
		data, err := os.ReadFile(f[0])
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f[1], data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := c.NotAfter(); !got.Equal(renewedUntil) {
		t.Errorf("NotAfter after Reload = %v, want %v", got, renewedUntil)
	}
}
