package push_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/xapsproxy/xapsproxy/config"
	"github.com/xapsproxy/xapsproxy/internal/apnstest"
	"github.com/xapsproxy/xapsproxy/internal/testpki"
	"github.com/xapsproxy/xapsproxy/push"
)

func TestAPNsSendsTheMailPush(t *testing.T) {
	e := newAPNsEnv(t)
	n := push.Notification{
		DeviceToken: token(1),
		Topic:       testTopic,
		AccountID:   "A1B2C3D4-acct",
		Expiration:  time.Now().Add(24 * time.Hour),
		Mailboxes:   []string{"INBOX", "Notes"},
	}
	resp, err := e.sender.Send(t.Context(), n)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.APNsID == "" {
		t.Errorf("response %+v, want 200 with an apns-id", resp)
	}

	reqs := e.fake.WaitRequests(t, 1, 5*time.Second)
	if len(reqs) != 1 {
		t.Fatalf("got %d requests, want 1", len(reqs))
	}
	r := reqs[0]
	if r.Token != n.DeviceToken || r.Topic != testTopic || r.PushType != "background" || r.AccountID != n.AccountID {
		t.Errorf("request token %q topic %q push type %q account %q", r.Token, r.Topic, r.PushType, r.AccountID)
	}
	if !r.Expiration.Equal(n.Expiration.Truncate(time.Second)) {
		t.Errorf("apns-expiration %v, want %v", r.Expiration, n.Expiration.Truncate(time.Second))
	}
	if want := `{"aps":{"account-id":"A1B2C3D4-acct","m":["7e33429f656f1e6e9d79b29c3f82c57e","f4c6f851b00d5518bf888815de279aba"]}}`; string(r.Body) != want {
		t.Errorf("body %s, want %s", r.Body, want)
	}
	if _, ok := r.Header["Apns-Priority"]; ok {
		t.Errorf("apns-priority header sent: %q", r.Header.Get("apns-priority"))
	}
	if r.ClientUID != testTopic {
		t.Errorf("client certificate UID %q, want %q", r.ClientUID, testTopic)
	}
	if r.Authorization != "" {
		t.Errorf("authorization header %q sent with certificate auth", r.Authorization)
	}
}

func TestAPNsResponsesAndKeepAlive(t *testing.T) {
	e := newAPNsEnv(t)
	e.fake.SetResponse(token(2), 410, "Unregistered")
	e.fake.SetResponse(token(3), 400, "BadDeviceToken")
	e.fake.SetResponse(token(4), 500, "InternalServerError")
	for i, want := range []string{"200", "410 Unregistered", "400 BadDeviceToken", "500 InternalServerError"} {
		n := push.Notification{DeviceToken: token(i + 1), Topic: testTopic, AccountID: "acct", Expiration: time.Now().Add(24 * time.Hour)}
		resp, err := e.sender.Send(t.Context(), n)
		if err != nil {
			t.Fatal(err)
		}
		if resp.String() != want {
			t.Errorf("token %d: response %q, want %q", i+1, resp, want)
		}
	}
	if c := e.fake.Connections(); c != 1 {
		t.Errorf("%d connections for 4 pushes, want 1 kept open", c)
	}
}

func TestAPNsClientCertificateIsRequired(t *testing.T) {
	e := newAPNsEnv(t)
	// A certificate from a CA the server does not trust for clients.
	other := testpki.NewCA(t)
	dir := t.TempDir()
	cfg := e.cfg
	cfg.CertificateFile = testpki.WriteCombinedPEM(t, dir, "stranger", other.ClientCert(t, testTopic))
	creds, err := push.LoadCredentials(cfg, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	a, err := push.NewAPNs(creds, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	n := push.Notification{DeviceToken: token(1), Topic: testTopic, AccountID: "acct", Expiration: time.Now().Add(24 * time.Hour)}
	if resp, err := a.Send(t.Context(), n); err == nil {
		t.Fatalf("send with an untrusted client certificate succeeded: %v", resp)
	} else {
		t.Logf("rejected as expected: %v", err)
	}
	waitFor(t, 5*time.Second, "the server to log the handshake failure", func() bool {
		return len(e.fake.HandshakeErrors()) > 0
	})
	if reqs := e.fake.Requests(); len(reqs) != 0 {
		t.Errorf("server handled %d requests from an untrusted client", len(reqs))
	}
}

func TestAPNsVerifiesTheServer(t *testing.T) {
	e := newAPNsEnv(t)
	cfg := e.cfg
	cfg.CAFile = "" // system roots do not know the test CA
	creds, err := push.LoadCredentials(cfg, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	a, err := push.NewAPNs(creds, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	n := push.Notification{DeviceToken: token(1), Topic: testTopic, AccountID: "acct", Expiration: time.Now().Add(24 * time.Hour)}
	if _, err := a.Send(t.Context(), n); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("send to an unknown server: error %v, want a certificate verification error", err)
	}
}

func TestAPNsTokenAuth(t *testing.T) {
	ca := testpki.NewCA(t)
	dir := t.TempDir()
	key, p8 := testpki.WriteP8Key(t, dir, "AuthKey_KEYID12345")
	fake := apnstest.StartToken(t, ca, testTopic, &key.PublicKey, "KEYID12345", "TEAMID1234")
	cfg := config.APNS{
		TokenKeyFile: p8, KeyID: "KEYID12345", TeamID: "TEAMID1234", Topic: testTopic,
		Endpoint: fake.URL, CAFile: ca.WriteCA(t, dir),
	}
	creds, err := push.LoadCredentials(cfg, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	a, err := push.NewAPNs(creds, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	n := push.Notification{DeviceToken: token(7), Topic: creds.Topic, AccountID: "acct-7", Expiration: time.Now().Add(24 * time.Hour)}
	resp, err := a.Send(t.Context(), n)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("Send: %v, %v", resp, err)
	}
	r := fake.WaitRequests(t, 1, 5*time.Second)[0]
	if !strings.HasPrefix(r.Authorization, "bearer ") || r.AccountID != "acct-7" {
		t.Errorf("authorization %q, account %q", r.Authorization, r.AccountID)
	}
}

func TestNewAPNsNeedsCredentials(t *testing.T) {
	if _, err := push.NewAPNs(nil, config.APNS{Endpoint: config.EndpointProduction}); err == nil {
		t.Error("NewAPNs(nil) succeeded")
	}
	if _, err := push.NewAPNs(&push.Credentials{}, config.APNS{Endpoint: config.EndpointProduction}); err == nil {
		t.Error("NewAPNs without certificate or token succeeded")
	}
}

func TestLogSenderLogsTheExactRequest(t *testing.T) {
	var buf bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&buf, nil))
	s := push.NewLogSender(logger, config.APNS{Endpoint: config.EndpointDevelopment})
	exp := time.Now().Add(24 * time.Hour)
	resp, err := s.Send(context.Background(), push.Notification{DeviceToken: token(9), Topic: testTopic, AccountID: "acct-9", Expiration: exp, Mailboxes: []string{"INBOX"}})
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("Send: %v, %v", resp, err)
	}
	out := buf.String()
	for _, want := range []string{
		"POST /3/device/" + token(9) + " HTTP/2",
		"api.sandbox.push.apple.com",
		"headers.apns-topic=" + testTopic,
		"headers.apns-push-type=background",
		fmt.Sprintf("headers.apns-expiration=%d", exp.Unix()),
		`{\"aps\":{\"account-id\":\"acct-9\",\"m\":[\"7e33429f656f1e6e9d79b29c3f82c57e\"]}}`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("log %q does not contain %q", out, want)
		}
	}
	if strings.Contains(out, "apns-priority") {
		t.Errorf("log %q shows an apns-priority header", out)
	}
}

func TestPayload(t *testing.T) {
	for _, tc := range []struct {
		account   string
		mailboxes []string
		want      string
	}{
		{`a"b`, nil, `{"aps":{"account-id":"a\"b"}}`},
		// MD5 of the names exactly as given, in the order given.
		{"acct", []string{"INBOX"}, `{"aps":{"account-id":"acct","m":["7e33429f656f1e6e9d79b29c3f82c57e"]}}`},
		{"acct", []string{"Notes", "INBOX"}, `{"aps":{"account-id":"acct","m":["f4c6f851b00d5518bf888815de279aba","7e33429f656f1e6e9d79b29c3f82c57e"]}}`},
		{"acct", []string{"inbox"}, `{"aps":{"account-id":"acct","m":["af1cd994dfcb9286c394d142687ff5a0"]}}`},
	} {
		if got := string(push.Payload(tc.account, tc.mailboxes)); got != tc.want {
			t.Errorf("Payload(%q, %q) = %s, want %s", tc.account, tc.mailboxes, got, tc.want)
		}
	}
}
