package push_test

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"testing"
	"time"

	"github.com/xapsproxy/xapsproxy/event"
	"github.com/xapsproxy/xapsproxy/internal/testpki"
	"github.com/xapsproxy/xapsproxy/push"
)

// serialOf is a certificate's serial as the fake APNs records it.
func serialOf(t *testing.T, cert tls.Certificate) string {
	t.Helper()
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return leaf.SerialNumber.Text(16)
}

// renewed loads a new certificate for uid from e's CA, as a renewal
// written over the old file would be.
func renewed(t *testing.T, e *apnsEnv, uid string) (*push.Credentials, tls.Certificate) {
	t.Helper()
	cert := e.ca.ClientCert(t, uid)
	cfg := e.cfg
	cfg.CertificateFile = testpki.WriteCombinedPEM(t, t.TempDir(), "renewed", cert)
	creds, err := push.LoadCredentials(cfg, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return creds, cert
}

// After Reload every new push presents the new certificate, on new
// connections; a push in flight at the time is answered on the old one,
// which is closed once it is done. A certificate for another topic is
// refused and the current one stays.
func TestAPNsReloadSwitchesTheCertificate(t *testing.T) {
	e := newAPNsEnv(t)
	a := newSender(t, e, 2)
	oldSerial := serialOf(t, e.cert)

	e.fake.Hold()
	inFlight := make(chan error, 1)
	go func() {
		resp, err := a.Send(t.Context(), note(1))
		if err == nil && resp.StatusCode != 200 {
			err = errors.New(resp.String())
		}
		inFlight <- err
	}()
	e.fake.WaitRequests(t, 1, 5*time.Second)

	creds, cert := renewed(t, e, testTopic)
	newSerial := serialOf(t, cert)
	if err := a.Reload(creds); err != nil {
		t.Fatal(err)
	}
	after := make(chan error, 1)
	go func() {
		resp, err := a.Send(t.Context(), note(2))
		if err == nil && resp.StatusCode != 200 {
			err = errors.New(resp.String())
		}
		after <- err
	}()
	reqs := e.fake.WaitRequests(t, 2, 5*time.Second)
	e.fake.Release()
	if err := <-inFlight; err != nil {
		t.Errorf("the push in flight during the reload: %v", err)
	}
	if err := <-after; err != nil {
		t.Errorf("the push after the reload: %v", err)
	}
	if reqs[0].ClientSerial != oldSerial || reqs[1].ClientSerial != newSerial || reqs[0].Conn == reqs[1].Conn {
		t.Errorf("serials %s (conn %d), %s (conn %d); want %s then %s on another connection",
			reqs[0].ClientSerial, reqs[0].Conn, reqs[1].ClientSerial, reqs[1].Conn, oldSerial, newSerial)
	}
	waitFor(t, 5*time.Second, "the old connection to close", func() bool { return e.fake.OpenConnections() == 1 })

	other, _ := renewed(t, e, "com.apple.mail.XServer.another")
	if err := a.Reload(other); !errors.Is(err, push.ErrTopicChanged) {
		t.Errorf("a certificate for another topic: %v, want ErrTopicChanged", err)
	}
	if _, err := a.Send(t.Context(), note(3)); err != nil {
		t.Fatal(err)
	}
	if r := e.fake.Requests()[2]; r.ClientSerial != newSerial {
		t.Errorf("after a refused reload the push presented %s, want %s", r.ClientSerial, newSerial)
	}
}

// Pushes held because APNs refused the credential go as soon as the
// Pusher hears of a reload, not at the next recheck a minute later: the
// fake clock never moves here.
func TestReloadReopensTheCredentialGate(t *testing.T) {
	e := newAPNsEnv(t)
	st := newMemStore(reg("alice", 1, "acct-a"), reg("bob", 2, "acct-b"))
	clk := newFakeClock()
	p := push.New(push.Options{Store: st, Sender: e.sender, Logger: testLogger(t), Topic: testTopic, Clock: clk,
		CredentialRecheck: time.Minute})
	startRun(t, p)
	e.fake.SetDefault(403, "BadCertificate")
	p.Notify(event.Event{User: "alice", Mailbox: "INBOX", Kind: event.KindNew})
	waitFor(t, 5*time.Second, "the 403 to close the gate", func() bool { return p.Stats().Held == "credential" })
	p.Notify(event.Event{User: "bob", Mailbox: "INBOX", Kind: event.KindNew})
	clk.waitArmed(t, clk.Now().Add(time.Minute)) // without a reload, the recheck a minute on
	refused := e.fake.Count()

	creds, cert := renewed(t, e, testTopic)
	if err := e.sender.Reload(creds); err != nil {
		t.Fatal(err)
	}
	e.fake.SetDefault(200, "")
	p.CredentialReloaded()
	waitFor(t, 5*time.Second, "both held pushes to be answered 200", func() bool {
		return len(st.results(token(1))) > 0 && st.results(token(1))[len(st.results(token(1)))-1] == "200" &&
			len(st.results(token(2))) > 0 && st.results(token(2))[len(st.results(token(2)))-1] == "200"
	})
	if held := p.Stats().Held; held != "" {
		t.Errorf("gate %q after the reload, want open", held)
	}
	want := serialOf(t, cert)
	for _, r := range e.fake.Requests()[refused:] {
		if r.ClientSerial != want {
			t.Errorf("push to %s after the reload presented %s, want %s", r.Token[:8], r.ClientSerial, want)
		}
	}
}
