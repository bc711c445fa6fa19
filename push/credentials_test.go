package push_test

import (
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

	// OpenSSL 3 encrypts with AES by default, which apns2 cannot read: the
	// error must tell the operator what to do.
	if out, _ := exec.Command(openssl, "version").Output(); !strings.HasPrefix(string(out), "OpenSSL 3") {
		t.Logf("skipping the AES .p12 check: %s is not OpenSSL 3", strings.TrimSpace(string(out)))
		return
	}
	modern := filepath.Join(dir, "modern.p12")
	runOpenSSL(t, openssl, "pkcs12", "-export", "-in", certFile, "-inkey", keyFile,
		"-out", modern, "-passout", "pass:s3cret")
	_, err = push.LoadCredentials(config.APNS{CertificateFile: modern, CertificatePassword: "s3cret"}, time.Now())
	wantErr(t, err, modern, "-legacy", "PEM")
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
