package main

import (
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/xapsproxy/xapsproxy/internal/dovecottest"
	"github.com/xapsproxy/xapsproxy/internal/testpki"
)

// serialInFile is the serial of the first certificate in a PEM file, as
// the fake APNs records it.
func serialInFile(t *testing.T, path string) string {
	t.Helper()
	return firstCertificate(t, path).SerialNumber.Text(16)
}

// The Mail push certificate is renewed without a restart: the file is
// replaced, serve gets SIGHUP, and the next push presents the new
// certificate to APNs. A file that does not load, or a certificate for
// another topic, is refused with one error line, and pushes go on with
// the current certificate.
func TestServeReloadsTheAPNsCertificate(t *testing.T) {
	t.Parallel()
	s := newStackWith(t, dovecottest.Options{}, "")
	file := s.cfg.APNS.CertificateFile
	oldSerial := serialInFile(t, file)
	p := startServe(t, s.cfgPath)
	d := dialProxy(t, s, p)
	d.loginAndRegisterInbox()
	waitServeWatching(t, p)
	s.deliver("before the renewal")
	if r := s.apns.WaitRequests(t, 1, waitTimeout)[0]; r.ClientSerial != oldSerial {
		t.Fatalf("first push presented %s, want %s", r.ClientSerial, oldSerial)
	}

	replace := func(data []byte) {
		t.Helper()
		tmp := file + ".new"
		if err := os.WriteFile(tmp, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, file); err != nil {
			t.Fatal(err)
		}
	}
	hup := func(want string, n int) string {
		t.Helper()
		if err := syscall.Kill(p.pid(), syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		var line string
		waitUntil(t, "log line "+want, func() bool {
			var found []string
			for l := range strings.Lines(p.log()) {
				if strings.Contains(l, want) {
					found = append(found, l)
				}
			}
			if len(found) == n {
				line = found[n-1]
			}
			return len(found) == n
		})
		return line
	}

	notAfter := time.Now().Add(90 * 24 * time.Hour).UTC().Truncate(time.Second)
	renewed := s.ca.ClientCert(t, topic, testpki.Validity(time.Now().Add(-time.Hour), notAfter))
	replace(append(testpki.CertPEM(renewed), testpki.KeyPEM(t, renewed)...))
	newSerial := serialInFile(t, file)
	line := hup(`msg="APNs credential reloaded"`, 1)
	if !strings.Contains(line, "expires "+notAfter.Format(time.RFC3339)) {
		t.Errorf("reload line %q does not give the new expiry %s", line, notAfter.Format(time.RFC3339))
	}
	s.deliver("after the renewal")
	if r := s.apns.WaitRequests(t, 2, waitTimeout)[1]; r.ClientSerial != newSerial {
		t.Errorf("push after the reload presented %s, want the new certificate's %s", r.ClientSerial, newSerial)
	}

	other := s.ca.ClientCert(t, "com.apple.mail.XServer.another")
	replace(append(testpki.CertPEM(other), testpki.KeyPEM(t, other)...))
	line = hup("it is for another topic; keeping the current one", 1)
	if !strings.Contains(line, "level=ERROR") || !strings.Contains(line, "current="+topic) {
		t.Errorf("another topic: %q", line)
	}
	replace([]byte("not a certificate\n"))
	line = hup(`msg="APNs credential not reloaded; keeping the current one"`, 1)
	if !strings.Contains(line, "level=ERROR") || !strings.Contains(line, "apns.certificate_file "+file) {
		t.Errorf("a file that does not load: %q", line)
	}
	s.deliver("after the refusals")
	if r := s.apns.WaitRequests(t, 3, waitTimeout)[2]; r.ClientSerial != newSerial {
		t.Errorf("push after the refused reloads presented %s, want %s", r.ClientSerial, newSerial)
	}
	if strings.Contains(p.log(), "panic") || strings.Count(p.log(), "APNs credential reloaded") != 1 {
		t.Errorf("unexpected log:\n%s", p.log())
	}
}
