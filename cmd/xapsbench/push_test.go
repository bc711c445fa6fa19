package main

import (
	"context"
	"crypto/md5"
	"crypto/tls"
	"encoding/hex"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/xapsproxy/xapsproxy/config"
	"github.com/xapsproxy/xapsproxy/push"
)

// TestFakeAPNs sends pushes with xapsproxy's own APNs client, configured
// from the bench's config, to the fake.
func TestFakeAPNs(t *testing.T) {
	dir := t.TempDir()
	p, err := newPKI(dir)
	if err != nil {
		t.Fatal(err)
	}
	token := newDeviceToken()
	f, err := startFakeAPNs(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.addDevice(token, pushAccountID, "INBOX", "Notes")
	cfg, err := config.Parse(xapsproxyConfig(p, filepath.Join(dir, "x.db"), instance{backend: "127.0.0.1:143", apns: f.endpoint(p)}), dir)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.APNS.EndpointURL() != f.url || cfg.APNS.CAFile != p.caFile {
		t.Fatalf("apns config %+v, want endpoint %s and ca_file %s", cfg.APNS, f.url, p.caFile)
	}
	creds, err := push.LoadCredentials(cfg.APNS, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	client, err := push.NewAPNs(creds, cfg.APNS)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	ctx := context.Background()
	send := func(n push.Notification) {
		t.Helper()
		n.Expiration = time.Now().Add(24 * time.Hour)
		res, err := client.Send(ctx, n)
		if err != nil || res.StatusCode != http.StatusOK || res.APNsID == "" {
			t.Fatalf("Send = %+v, %v; want 200 with an apns-id", res, err)
		}
	}
	good := push.Notification{DeviceToken: token, Topic: creds.Topic, AccountID: pushAccountID, Mailboxes: []string{"INBOX"}}
	send(good)
	if a, ok, err := f.next(ctx, time.Second); !ok || err != nil || !a.ok || a.token != token || !slices.Equal(a.mailboxes, []string{"INBOX"}) {
		t.Fatalf("well-formed push: arrival %+v, %v, %v", a, ok, err)
	}
	good.Mailboxes = []string{"INBOX", "Notes"}
	send(good)
	if a, ok, err := f.next(ctx, time.Second); !ok || err != nil || !a.ok || !slices.Equal(a.mailboxes, []string{"INBOX", "Notes"}) {
		t.Fatalf("push for INBOX and Notes: arrival %+v, %v, %v", a, ok, err)
	}
	if _, _, problems, tlsState := f.stats(); len(problems) > 0 || !strings.Contains(tlsState, "HTTP/2.0") {
		t.Fatalf("well-formed push: problems %q, connection %q", problems, tlsState)
	}

	bad := good
	bad.AccountID, bad.DeviceToken = "other", strings.Repeat("ab", 32)
	send(bad)
	if a, ok, _ := f.next(ctx, time.Second); !ok || a.ok {
		t.Fatalf("malformed push: arrival %+v, %v; want one, not ok", a, ok)
	}
	requests, conns, problems, _ := f.stats()
	if requests != 3 || conns != 1 || len(problems) != 1 {
		t.Fatalf("requests %d, connections %d, problems %q; want 3, 1 and one (the path of a device never added)", requests, conns, problems)
	}
	if len(f.take()) != 0 {
		t.Error("take after next: arrivals left")
	}

	// Without a client certificate there is no TLS session, so no request.
	pool, _ := p.pool()
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}}
	if resp, err := hc.Post(f.url+"/3/device/"+token, "application/json", strings.NewReader("{}")); err == nil {
		resp.Body.Close()
		t.Fatalf("request without client certificate: %s", resp.Status)
	}
	if n, _, _, _ := f.stats(); n != 3 {
		t.Errorf("request without client certificate was recorded")
	}
}

func TestCheckPayload(t *testing.T) {
	if sum := md5.Sum([]byte("INBOX")); hex.EncodeToString(sum[:]) != pushMailboxHash || mailboxHash("INBOX") != pushMailboxHash {
		t.Fatalf("pushMailboxHash %s is not the MD5 of INBOX", pushMailboxHash)
	}
	dev := fakeDevice{accountID: "A", mailboxes: map[string]string{pushMailboxHash: "INBOX", mailboxHash("Notes"): "Notes"}}
	const m = `"m":["7e33429f656f1e6e9d79b29c3f82c57e"]`
	notes := mailboxHash("Notes")
	both := `"m":["` + min(notes, pushMailboxHash) + `","` + max(notes, pushMailboxHash) + `"]`
	for body, ok := range map[string]bool{
		`{"aps":{"account-id":"A",` + m + `}}`:                        true,
		` {"aps": {` + m + `, "account-id": "A"}} `:                   true,
		`{"aps":{"account-id":"A",` + both + `}}`:                     true,
		`{"aps":{"account-id":"A","m":["` + mailboxHash("X") + `"]}}`: false,
		`{"aps":{"account-id":"A"}}`:                                  false,
		`{"aps":{"account-id":"B",` + m + `}}`:                        false,
		`{"aps":{"account-id":"A","m":[]}}`:                           false,
		`{"aps":{"account-id":"A","m":["INBOX"]}}`:                    false,
		`{"aps":{"account-id":"A",` + m + `,"sound":"x"}}`:            false,
		`{"aps":{"Account-Id":"A",` + m + `}}`:                        false,
		`{"aps":{"account-id":"A",` + m + `},"x":{}}`:                 false,
		`{"aps":{"account-id":"A",` + m + `}}{}`:                      false,
		`{"aps":{"account-id":1,` + m + `}}`:                          false,
		`[]`:                                                          false,
	} {
		if _, err := checkPayload([]byte(body), dev); (err == nil) != ok {
			t.Errorf("checkPayload(%s) = %v, want ok %v", body, err, ok)
		}
	}
}

func TestPushReport(t *testing.T) {
	p := &pushResult{user: "bob", deliveries: 3, warmups: 1, requests: 4, conns: 1,
		lmtp:   []time.Duration{time.Millisecond, time.Millisecond, time.Millisecond},
		push:   []time.Duration{502 * time.Millisecond, 503 * time.Millisecond},
		exists: []time.Duration{500 * time.Millisecond, 501 * time.Millisecond, 501 * time.Millisecond},
		cost:   []time.Duration{2 * time.Millisecond, 2 * time.Millisecond}, missing: []int{2}}
	var b strings.Builder
	p.print(&report{w: &b})
	out := b.String()
	for _, want := range []string{"502.0", "2/3", "3/3", "missing push(es) (deliveries 2)", "+2.0 ms"} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	if p.errors() != 1 || !strings.Contains(p.summary(), "1 ERROR") {
		t.Errorf("errors %d, summary %q", p.errors(), p.summary())
	}
}

func TestExistsRE(t *testing.T) {
	if m := existsRE().FindStringSubmatch("* 12 EXISTS\r\n"); m == nil || m[1] != "12" {
		t.Errorf("EXISTS not recognised: %q", m)
	}
	if existsRE().MatchString("* 12 RECENT\r\n") {
		t.Error("RECENT taken for EXISTS")
	}
}
