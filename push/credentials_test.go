package push_test

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/xapsproxy/xapsproxy/config"
	"github.com/xapsproxy/xapsproxy/internal/testpki"
	"github.com/xapsproxy/xapsproxy/push"
	"software.sslmate.com/src/go-pkcs12"
)

func TestLoadCredentialsCombinedPEM(t *testing.T) {
	ca := testpki.NewCA(t)
	cert := ca.ClientCert(t, testTopic)
	path := testpki.WriteCombinedPEM(t, t.TempDir(), "apns", cert)

	creds, err := push.LoadCredentials(config.APNS{CertificateFile: path}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if creds.Certificate == nil || creds.Token != nil {
		t.Fatalf("Certificate %v, Token %v: want a certificate and no token", creds.Certificate, creds.Token)
	}
	if creds.Topic != testTopic {
		t.Errorf("Topic = %q, want the UID %q", creds.Topic, testTopic)
	}
	if !strings.Contains(creds.Subject, testTopic) || !strings.Contains(creds.Subject, "Apple Push Services") {
		t.Errorf("Subject = %q, want UID and CN", creds.Subject)
	}
	if !creds.NotAfter.Equal(cert.Leaf.NotAfter) {
		t.Errorf("NotAfter = %v, want %v", creds.NotAfter, cert.Leaf.NotAfter)
	}
	if creds.HasTopics || creds.RootCAs != nil {
		t.Errorf("HasTopics %v, RootCAs %v: want neither", creds.HasTopics, creds.RootCAs)
	}
	d := creds.Describe()
	for _, want := range []string{testTopic, path, "PEM", creds.NotAfter.UTC().Format(time.RFC3339)} {
		if !strings.Contains(d, want) {
			t.Errorf("Describe() = %q, want it to mention %q", d, want)
		}
	}
	if strings.Contains(d, "PRIVATE") || strings.Contains(d, "BEGIN") {
		t.Errorf("Describe() = %q shows key material", d)
	}
}

func TestLoadCredentialsSeparateKeyFile(t *testing.T) {
	ca := testpki.NewCA(t)
	dir := t.TempDir()
	certFile, keyFile := testpki.WritePEM(t, dir, "apns", ca.ClientCert(t, testTopic))

	creds, err := push.LoadCredentials(config.APNS{CertificateFile: certFile, KeyFile: keyFile}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if creds.Topic != testTopic {
		t.Errorf("Topic = %q, want %q", creds.Topic, testTopic)
	}

	// Without key_file the certificate alone is not enough.
	_, err = push.LoadCredentials(config.APNS{CertificateFile: certFile}, time.Now())
	wantErr(t, err, certFile, "no private key", "key_file")

	// A key from another certificate is refused.
	_, otherKey := testpki.WritePEM(t, dir, "other", ca.ClientCert(t, testTopic))
	_, err = push.LoadCredentials(config.APNS{CertificateFile: certFile, KeyFile: otherKey}, time.Now())
	wantErr(t, err, certFile, "does not belong")
}

func TestLoadCredentialsConfigTopicOverrides(t *testing.T) {
	ca := testpki.NewCA(t)
	path := testpki.WriteCombinedPEM(t, t.TempDir(), "apns", ca.ClientCert(t, testTopic))
	creds, err := push.LoadCredentials(config.APNS{CertificateFile: path, Topic: "com.example.other"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if creds.Topic != "com.example.other" {
		t.Errorf("Topic = %q, want the configured com.example.other", creds.Topic)
	}
}

func TestLoadCredentialsTopicsExtension(t *testing.T) {
	ca := testpki.NewCA(t)
	cert := ca.ClientCert(t, testTopic, testpki.Topics(testTopic, testTopic+".voip"))
	path := testpki.WriteCombinedPEM(t, t.TempDir(), "apns", cert)
	creds, err := push.LoadCredentials(config.APNS{CertificateFile: path}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if !creds.HasTopics || !slices.Equal(creds.Topics, []string{testTopic, testTopic + ".voip"}) {
		t.Errorf("HasTopics %v, Topics %q: want both topics", creds.HasTopics, creds.Topics)
	}
	if d := creds.Describe(); !strings.Contains(d, "lists 2 topics") {
		t.Errorf("Describe() = %q, want it to mention the topics extension", d)
	}
}

func TestLoadCredentialsNoUID(t *testing.T) {
	ca := testpki.NewCA(t)
	path := testpki.WriteCombinedPEM(t, t.TempDir(), "apns", ca.ServerCert(t, "example.com"))
	_, err := push.LoadCredentials(config.APNS{CertificateFile: path}, time.Now())
	wantErr(t, err, path, "no UID", "apns.topic")
}

func TestLoadCredentialsValidity(t *testing.T) {
	ca := testpki.NewCA(t)
	dir := t.TempDir()
	expired := testpki.WriteCombinedPEM(t, dir, "expired", ca.ClientCert(t, testTopic, testpki.Expired()))
	_, err := push.LoadCredentials(config.APNS{CertificateFile: expired}, time.Now())
	wantErr(t, err, "apns.certificate_file "+expired+": certificate expired on ", " — renew it")

	now := time.Now()
	future := testpki.WriteCombinedPEM(t, dir, "future",
		ca.ClientCert(t, testTopic, testpki.Validity(now.Add(time.Hour), now.Add(48*time.Hour))))
	_, err = push.LoadCredentials(config.APNS{CertificateFile: future}, now)
	wantErr(t, err, "apns.certificate_file "+future+": certificate is not valid before ", " — check this machine's clock")
}

func TestLoadCredentialsMissingFiles(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "nope.pem")
	_, err := push.LoadCredentials(config.APNS{CertificateFile: missing}, time.Now())
	wantErr(t, err, "apns.certificate_file "+missing+": no such file or directory — check the path")
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("error %v does not wrap fs.ErrNotExist", err)
	}

	ca := testpki.NewCA(t)
	certFile, _ := testpki.WritePEM(t, dir, "apns", ca.ClientCert(t, testTopic))
	missingKey := filepath.Join(dir, "nope.key")
	_, err = push.LoadCredentials(config.APNS{CertificateFile: certFile, KeyFile: missingKey}, time.Now())
	wantErr(t, err, "apns.key_file "+missingKey+": no such file")

	_, err = push.LoadCredentials(config.APNS{TokenKeyFile: missing, KeyID: "K", TeamID: "T", Topic: "x"}, time.Now())
	wantErr(t, err, "apns.token_key_file "+missing+": no such file")

	_, err = push.LoadCredentials(config.APNS{}, time.Now())
	wantErr(t, err, "certificate_file")
}

func TestLoadCredentialsCAFile(t *testing.T) {
	ca := testpki.NewCA(t)
	dir := t.TempDir()
	path := testpki.WriteCombinedPEM(t, dir, "apns", ca.ClientCert(t, testTopic))
	creds, err := push.LoadCredentials(config.APNS{CertificateFile: path, CAFile: ca.WriteCA(t, dir)}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if creds.RootCAs == nil {
		t.Error("RootCAs is nil with ca_file set")
	}

	bad := filepath.Join(dir, "bad-ca.pem")
	if err := os.WriteFile(bad, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = push.LoadCredentials(config.APNS{CertificateFile: path, CAFile: bad}, time.Now())
	wantErr(t, err, "apns.ca_file "+bad+": no PEM certificates found — ")
	if !errors.Is(err, config.ErrNoCertificates) {
		t.Errorf("error %v does not wrap config.ErrNoCertificates", err)
	}
}

func TestLoadCredentialsToken(t *testing.T) {
	dir := t.TempDir()
	_, p8 := testpki.WriteP8Key(t, dir, "AuthKey_KEYID12345")
	cfg := config.APNS{TokenKeyFile: p8, KeyID: "KEYID12345", TeamID: "TEAMID1234", Topic: testTopic}
	creds, err := push.LoadCredentials(cfg, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if creds.Token == nil || creds.Certificate != nil {
		t.Fatalf("Token %v, Certificate %v: want a token and no certificate", creds.Token, creds.Certificate)
	}
	if creds.Topic != testTopic || creds.Token.KeyID != "KEYID12345" || creds.Token.TeamID != "TEAMID1234" {
		t.Errorf("Topic %q, key id %q, team id %q", creds.Topic, creds.Token.KeyID, creds.Token.TeamID)
	}
	d := creds.Describe()
	if !strings.Contains(d, "KEYID12345") || !strings.Contains(d, testTopic) || strings.Contains(d, creds.Token.Bearer) {
		t.Errorf("Describe() = %q: want key id and topic, and no bearer token", d)
	}

	noTopic := cfg
	noTopic.Topic = ""
	_, err = push.LoadCredentials(noTopic, time.Now())
	wantErr(t, err, p8, "topic is required")

	// A certificate is not a .p8 key.
	ca := testpki.NewCA(t)
	notKey := ca.WriteCA(t, dir)
	badKey := cfg
	badKey.TokenKeyFile = notKey
	_, err = push.LoadCredentials(badKey, time.Now())
	wantErr(t, err, notKey, ".p8")
}

func TestLoadCredentialsP12(t *testing.T) {
	openssl := requireOpenSSL(t)
	ca := testpki.NewCA(t)
	dir := t.TempDir()
	certFile, keyFile := testpki.WritePEM(t, dir, "apns", ca.ClientCert(t, testTopic))
	caFile := ca.WriteCA(t, dir)

	legacy := filepath.Join(dir, "legacy.p12")
	runOpenSSL(t, openssl, "pkcs12", "-export", "-legacy", "-in", certFile, "-inkey", keyFile,
		"-out", legacy, "-passout", "pass:s3cret")

	creds, err := push.LoadCredentials(config.APNS{CertificateFile: legacy, CertificatePassword: "s3cret"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if creds.Topic != testTopic || creds.Format != "PKCS#12" {
		t.Errorf("Topic %q, Format %q: want %q from a PKCS#12 file", creds.Topic, creds.Format, testTopic)
	}

	_, err = push.LoadCredentials(config.APNS{CertificateFile: legacy, CertificatePassword: "wrong"}, time.Now())
	wantErr(t, err, legacy, "wrong certificate_password")

	// A .p12 that also carries the CA certificate.
	chain := filepath.Join(dir, "chain.p12")
	runOpenSSL(t, openssl, "pkcs12", "-export", "-legacy", "-in", certFile, "-inkey", keyFile,
		"-certfile", caFile, "-out", chain, "-passout", "pass:s3cret")
	creds, err = push.LoadCredentials(config.APNS{CertificateFile: chain, CertificatePassword: "s3cret"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if creds.Topic != testTopic || len(creds.Certificate.Certificate) != 2 {
		t.Errorf("Topic %q with %d certificates: want %q and leaf + CA", creds.Topic, len(creds.Certificate.Certificate), testTopic)
	}

	// OpenSSL 3 encrypts with AES (PBES2) by default.
	if out, _ := exec.Command(openssl, "version").Output(); !strings.HasPrefix(string(out), "OpenSSL 3") {
		t.Logf("skipping the AES .p12 check: %s is not OpenSSL 3", strings.TrimSpace(string(out)))
		return
	}
	modern := filepath.Join(dir, "modern.p12")
	runOpenSSL(t, openssl, "pkcs12", "-export", "-in", certFile, "-inkey", keyFile,
		"-certfile", caFile, "-out", modern, "-passout", "pass:s3cret")
	creds, err = push.LoadCredentials(config.APNS{CertificateFile: modern, CertificatePassword: "s3cret"}, time.Now())
	if err != nil {
		t.Fatalf("OpenSSL 3 default .p12: %v", err)
	}
	if creds.Topic != testTopic || creds.Encryption != push.P12AES || len(creds.Certificate.Certificate) != 2 {
		t.Errorf("Topic %q, Encryption %q, %d certificates: want %q, %q, leaf + CA",
			creds.Topic, creds.Encryption, len(creds.Certificate.Certificate), testTopic, push.P12AES)
	}
	_, err = push.LoadCredentials(config.APNS{CertificateFile: modern, CertificatePassword: "wrong"}, time.Now())
	wantErr(t, err, modern, "wrong certificate_password")
	if !errors.Is(err, push.ErrWrongPassword) {
		t.Errorf("error %v does not wrap push.ErrWrongPassword", err)
	}
}

// TestLoadCredentialsP12Encoders reads .p12 files written with the modern
// (PBES2, AES-256-CBC, SHA-256 MAC) and the legacy encoders, with and
// without a CA certificate, in either order.
func TestLoadCredentialsP12Encoders(t *testing.T) {
	ca := testpki.NewCA(t)
	cert := ca.ClientCert(t, testTopic)
	caCert := parsePEMCert(t, ca.CertPEM())
	dir := t.TempDir()
	for _, tc := range []struct {
		name    string
		enc     *pkcs12.Encoder
		want    string
		withCA  bool
		caFirst bool
	}{
		{"modern", pkcs12.Modern, push.P12AES, false, false},
		{"modern2026", pkcs12.Modern2026, push.P12AES, false, false},
		{"modern-chain", pkcs12.Modern, push.P12AES, true, false},
		{"legacy-des", pkcs12.LegacyDES, push.P12Legacy, false, false},
		{"legacy-rc2", pkcs12.LegacyRC2, push.P12Legacy, false, false},
		{"legacy-ca-first", pkcs12.Legacy, push.P12Legacy, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			leaf, cas := cert.Leaf, []*x509.Certificate(nil)
			if tc.withCA {
				cas = []*x509.Certificate{caCert}
			}
			if tc.caFirst {
				// A file whose first certificate is not the key's.
				leaf, cas = caCert, []*x509.Certificate{cert.Leaf}
			}
			data, err := tc.enc.Encode(cert.PrivateKey, leaf, cas, "s3cret")
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, tc.name+".p12")
			if err := os.WriteFile(path, data, 0o600); err != nil {
				t.Fatal(err)
			}
			creds, err := push.LoadCredentials(config.APNS{CertificateFile: path, CertificatePassword: "s3cret"}, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			if creds.Format != "PKCS#12" || creds.Encryption != tc.want || creds.Topic != testTopic {
				t.Errorf("Format %q, Encryption %q, Topic %q: want PKCS#12, %q, %q", creds.Format, creds.Encryption, creds.Topic, tc.want, testTopic)
			}
			if !creds.Certificate.Leaf.Equal(cert.Leaf) || len(creds.Certificate.Certificate) != len(cas)+1 {
				t.Errorf("leaf %s with %d certificates: want the client certificate first of %d",
					creds.Certificate.Leaf.Subject, len(creds.Certificate.Certificate), len(cas)+1)
			}
			if !strings.HasSuffix(creds.Subject, ",CN=Apple Push Services: "+testTopic+",UID="+testTopic) {
				t.Errorf("Subject = %q, want it readable, UID as text", creds.Subject)
			}

			_, err = push.LoadCredentials(config.APNS{CertificateFile: path, CertificatePassword: "wrong"}, time.Now())
			wantErr(t, err, "apns.certificate_file "+path+": wrong certificate_password for this .p12 file", "apns.certificate_password")
			if !errors.Is(err, push.ErrWrongPassword) {
				t.Errorf("error %v does not wrap push.ErrWrongPassword", err)
			}
		})
	}

	// DER that is not a PKCS#12 file.
	notP12 := filepath.Join(dir, "cert.der")
	if err := os.WriteFile(notP12, cert.Certificate[0], 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := push.LoadCredentials(config.APNS{CertificateFile: notP12}, time.Now())
	wantErr(t, err, "apns.certificate_file "+notP12+": not a readable PEM or PKCS#12 file")
}

func parsePEMCert(t *testing.T, data []byte) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode(data)
	if b == nil {
		t.Fatal("no PEM block")
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// The subject and issuer show every attribute by its short name and its
// value as text, UID included, in the certificate's order (not reversed as
// pkix.Name.String does, which shows the UID as hex).
func TestFormatName(t *testing.T) {
	ca := testpki.NewCA(t)
	cert := ca.ClientCert(t, testTopic)
	path := testpki.WriteCombinedPEM(t, t.TempDir(), "apns", cert)
	creds, err := push.LoadCredentials(config.APNS{CertificateFile: path}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	// Go writes the test certificate's UID (an extra name) last; Apple's
	// certificates have it first.
	want := "C=US,O=xapsproxy tests,OU=TESTTEAM01,CN=Apple Push Services: " + testTopic + ",UID=" + testTopic
	if creds.Subject != want {
		t.Errorf("Subject = %q, want %q", creds.Subject, want)
	}
	if want := push.FormatName(cert.Leaf.Issuer); creds.Issuer != want || creds.Issuer == "" || strings.Contains(creds.Issuer, "#") {
		t.Errorf("Issuer = %q, want %q as text", creds.Issuer, want)
	}
	if d := creds.Describe(); !strings.Contains(d, "UID="+testTopic) {
		t.Errorf("Describe() = %q, want the readable UID", d)
	}

	name := pkix.Name{Names: []pkix.AttributeTypeAndValue{
		{Type: testpki.OIDUserID(), Value: "com.apple.mail.XServer.0a1b"},
		{Type: asn1.ObjectIdentifier{2, 5, 4, 3}, Value: "Doe, John + co"},
		{Type: asn1.ObjectIdentifier{2, 5, 4, 10}, Value: " #lead"},
		{Type: asn1.ObjectIdentifier{1, 2, 3, 4}, Value: "other"},
		{Type: asn1.ObjectIdentifier{1, 2, 3, 5}, Value: 7},
		{Type: asn1.ObjectIdentifier{0, 9, 2342, 19200300, 100, 1, 25}, Value: "example"},
		{Type: asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 1}, Value: "a@example.com"},
	}}
	want = `UID=com.apple.mail.XServer.0a1b,CN=Doe\, John \+ co,O=\ #lead,1.2.3.4=other,1.2.3.5=#020107,DC=example,emailAddress=a@example.com`
	if got := push.FormatName(name); got != want {
		t.Errorf("FormatName = %q, want %q", got, want)
	}
}

// requireOpenSSL returns the openssl binary, skipping the test without one
// unless XAPSPROXY_TEST_DOVECOT=required (CI), where it must be present.
func requireOpenSSL(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("openssl")
	if err != nil {
		if os.Getenv("XAPSPROXY_TEST_DOVECOT") == "required" {
			t.Fatalf("openssl is required (XAPSPROXY_TEST_DOVECOT=required): %v", err)
		}
		t.Skipf("openssl not found: %v", err)
	}
	return path
}

func runOpenSSL(t *testing.T, openssl string, args ...string) {
	t.Helper()
	if out, err := exec.Command(openssl, args...).CombinedOutput(); err != nil {
		t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// wantErr fails unless err is non-nil and mentions every one of wants.
func wantErr(t *testing.T, err error, wants ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want one mentioning %q", wants)
	}
	for _, w := range wants {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not mention %q", err, w)
		}
	}
}

func TestLoadCredentialsNotACertificate(t *testing.T) {
	junk := filepath.Join(t.TempDir(), "junk.pem")
	if err := os.WriteFile(junk, []byte("junk\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := push.LoadCredentials(config.APNS{CertificateFile: junk}, time.Now())
	wantErr(t, err, "apns.certificate_file "+junk+": neither PEM nor PKCS#12 — ")
}
