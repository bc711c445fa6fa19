package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"software.sslmate.com/src/go-pkcs12"

	"github.com/xapsproxy/xapsproxy/internal/testpki"
	"github.com/xapsproxy/xapsproxy/push"
)

const certTestTopic = "com.apple.mail.XServer.3a1c2f4e-6b7d-4e8f-9a0b-1c2d3e4f5a6b"

// runCert runs xapsproxy cert with args and returns its output.
func runCert(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	err := run(t.Context(), append([]string{"cert"}, args...), &out, &out)
	return out.String(), err
}

// wantLines fails unless out has every one of lines as a whole line.
func wantLines(t *testing.T, out string, lines ...string) {
	t.Helper()
	have := strings.Split(out, "\n")
	for _, l := range lines {
		found := false
		for _, h := range have {
			found = found || h == l
		}
		if !found {
			t.Errorf("output lacks the line %q:\n%s", l, out)
		}
	}
}

func writeP12(t *testing.T, enc *pkcs12.Encoder, dir, name, password string, ca *testpki.CA) string {
	t.Helper()
	cert := ca.ClientCert(t, certTestTopic)
	data, err := enc.Encode(cert.PrivateKey, cert.Leaf, nil, password)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestCertPEM(t *testing.T) {
	ca := testpki.NewCA(t)
	dir := t.TempDir()
	cert := ca.ClientCert(t, certTestTopic, testpki.Topics(certTestTopic, certTestTopic+".voip"))
	combined := testpki.WriteCombinedPEM(t, dir, "apns", cert)
	out, err := runCert(t, combined)
	if err != nil {
		t.Fatalf("cert: %v\n%s", err, out)
	}
	subject := "C=US,O=xapsproxy tests,OU=TESTTEAM01,CN=Apple Push Services: " + certTestTopic + ",UID=" + certTestTopic
	wantLines(t, out,
		"file:        "+combined,
		"kind:        certificate PEM, certificate and private key",
		"topic:       "+certTestTopic+" (subject UID)",
		"topics:      "+certTestTopic+", "+certTestTopic+".voip (topics extension)",
		"subject:     "+subject,
		"issuer:      "+push.FormatName(cert.Leaf.Issuer),
		"not before:  "+cert.Leaf.NotBefore.UTC().Format(time.RFC3339),
		"not after:   "+cert.Leaf.NotAfter.UTC().Format(time.RFC3339)+" (0 days left)",
		"WARNING: the certificate expires in 0 days; renew it with Apple before then",
	)
	if strings.Contains(out, "PRIVATE") || strings.Contains(out, "#13") {
		t.Errorf("output shows key material or a hex UID:\n%s", out)
	}

	// The certificate alone, valid for long enough not to warn.
	now := time.Now()
	long := ca.ClientCert(t, certTestTopic, testpki.Validity(now.Add(-time.Hour), now.Add(90*24*time.Hour+time.Hour)))
	certFile, _ := testpki.WritePEM(t, dir, "long", long)
	out, err = runCert(t, certFile)
	if err != nil {
		t.Fatalf("cert: %v\n%s", err, out)
	}
	wantLines(t, out,
		"kind:        certificate PEM, certificate only (no private key in the file)",
		"not after:   "+long.Leaf.NotAfter.UTC().Format(time.RFC3339)+" (90 days left)",
	)
	if strings.Contains(out, "WARNING") || strings.Contains(out, "topics:") {
		t.Errorf("a 90-day certificate without topics extension: no warning, no topics line:\n%s", out)
	}

	// An expired certificate is shown, with a warning.
	expired := testpki.WriteCombinedPEM(t, dir, "expired", ca.ClientCert(t, certTestTopic, testpki.Expired()))
	out, err = runCert(t, expired)
	if err != nil {
		t.Fatalf("cert: %v\n%s", err, out)
	}
	wantLines(t, out, "WARNING: the certificate has expired; renew it with Apple")
	if !strings.Contains(out, "(expired 0 days ago)") {
		t.Errorf("output lacks the expiry:\n%s", out)
	}
}

func TestCertP12(t *testing.T) {
	ca := testpki.NewCA(t)
	dir := t.TempDir()
	modern := writeP12(t, pkcs12.Modern, dir, "modern.p12", "s3cret-pw", ca)
	legacy := writeP12(t, pkcs12.Legacy, dir, "legacy.p12", "s3cret-pw", ca)

	// The password from the environment.
	t.Setenv(certPasswordEnv, "s3cret-pw")
	out, err := runCert(t, modern)
	if err != nil {
		t.Fatalf("cert: %v\n%s", err, out)
	}
	wantLines(t, out, "kind:        .p12, "+push.P12AES, "topic:       "+certTestTopic+" (subject UID)")

	// The flag, after the file, wins over the environment.
	t.Setenv(certPasswordEnv, "wrong")
	out, err = runCert(t, legacy, "-password", "s3cret-pw")
	if err != nil {
		t.Fatalf("cert: %v\n%s", err, out)
	}
	wantLines(t, out, "kind:        .p12, "+push.P12Legacy, "topic:       "+certTestTopic+" (subject UID)")
	if strings.Contains(out, "s3cret-pw") {
		t.Errorf("output shows the password:\n%s", out)
	}

	for _, p12 := range []string{modern, legacy} {
		out, err = runCert(t, "-password", "nope-pw", p12)
		if !errors.Is(err, push.ErrWrongPassword) || out != "" {
			t.Fatalf("wrong password: %v, output %q", err, out)
		}
		want := p12 + ": wrong password for this file — check -password or XAPSPROXY_CERT_PASSWORD"
		if err.Error() != want || strings.Contains(err.Error(), "nope-pw") {
			t.Errorf("error %q, want %q", err, want)
		}
	}

	t.Setenv(certPasswordEnv, "")
	_, err = runCert(t, modern)
	if want := modern + ": wrong password (none given) — pass -password or set XAPSPROXY_CERT_PASSWORD"; err == nil || err.Error() != want {
		t.Errorf("no password: %v, want %q", err, want)
	}
}

func TestCertTokenKey(t *testing.T) {
	dir := t.TempDir()
	_, p8 := testpki.WriteP8Key(t, dir, "AuthKey_KEYID12345")
	out, err := runCert(t, "-key-id", "KEYID12345", "-team-id", "TEAMID1234", p8)
	if err != nil {
		t.Fatalf("cert: %v\n%s", err, out)
	}
	wantLines(t, out,
		"file:        "+p8,
		"kind:        token key (.p8)",
		"key:         ES256 (ECDSA P-256)",
		"key id:      KEYID12345",
		"team id:     TEAMID1234",
		"topic:       not given (-topic; a token key carries no topic)",
	)
	if strings.Contains(out, "PRIVATE") || strings.Contains(out, "eyJ") {
		t.Errorf("output shows key material or a token:\n%s", out)
	}
}

func TestCertBadFiles(t *testing.T) {
	dir := t.TempDir()
	junk := filepath.Join(dir, "junk.pem")
	if err := os.WriteFile(junk, []byte("junk\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	notCert := filepath.Join(dir, "not-cert.pem")
	if err := os.WriteFile(notCert, []byte("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.p12")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{junk}, junk + ": neither PEM nor PKCS#12"},
		{[]string{notCert}, notCert + ": no CERTIFICATE block found"},
		{[]string{missing}, "read credential file: open " + missing + ": no such file or directory"},
		{nil, "name the credential file"},
		{[]string{junk, junk}, "one file only"},
	} {
		out, err := runCert(t, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) || out != "" {
			t.Errorf("cert %q: error %v, output %q: want an error mentioning %q and no output", tc.args, err, out, tc.want)
		}
		if strings.Contains(err.Error(), "\n") {
			t.Errorf("cert %q: error %q spans lines", tc.args, err)
		}
	}
}

// A .p12 as `openssl pkcs12 -export` writes it: AES (PBES2) with OpenSSL 3.
func TestCertOpenSSLP12(t *testing.T) {
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Skipf("openssl not found: %v", err)
	}
	ca := testpki.NewCA(t)
	dir := t.TempDir()
	certFile, keyFile := testpki.WritePEM(t, dir, "apns", ca.ClientCert(t, certTestTopic))
	p12 := filepath.Join(dir, "apns.p12")
	cmd := exec.Command(openssl, "pkcs12", "-export", "-in", certFile, "-inkey", keyFile, "-out", p12, "-passout", "env:P12PASS")
	cmd.Env = append(os.Environ(), "P12PASS=s3cret-pw")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("openssl pkcs12 -export: %v\n%s", err, out)
	}
	out, err := runCert(t, "-password", "s3cret-pw", p12)
	if err != nil {
		t.Fatalf("cert: %v\n%s", err, out)
	}
	wantLines(t, out, "topic:       "+certTestTopic+" (subject UID)")
	if v, _ := exec.Command(openssl, "version").Output(); strings.HasPrefix(string(v), "OpenSSL 3") {
		wantLines(t, out, "kind:        .p12, "+push.P12AES)
	}
}
