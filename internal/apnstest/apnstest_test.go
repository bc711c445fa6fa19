package apnstest_test

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xapsproxy/xapsproxy/internal/apnstest"
	"github.com/xapsproxy/xapsproxy/internal/testpki"
)

const topic = "com.apple.mail.XServer.test"

var goodToken = strings.Repeat("ab", 32)

// recordingTB keeps the fake's end-of-test errors instead of failing.
type recordingTB struct {
	testing.TB
	mu   sync.Mutex
	errs []string
}

func (r *recordingTB) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

func client(t *testing.T, ca *testpki.CA, http2 bool) *http.Client {
	tr := &http.Transport{TLSClientConfig: &tls.Config{
		Certificates: []tls.Certificate{ca.ClientCert(t, topic)},
		RootCAs:      ca.Pool(),
	}}
	if http2 {
		tr.Protocols = new(http.Protocols)
		tr.Protocols.SetHTTP2(true)
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

type request struct {
	method, path, body string
	header             map[string]string
}

func goodRequest() request {
	return request{
		method: http.MethodPost,
		path:   "/3/device/" + goodToken,
		body:   `{"aps":{"account-id":"acct-1"}}`,
		header: map[string]string{
			"apns-topic":      topic,
			"apns-push-type":  "background",
			"apns-expiration": strconv.FormatInt(time.Now().Add(24*time.Hour).Unix(), 10),
		},
	}
}

func do(t *testing.T, c *http.Client, base string, r request) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(r.method, base+r.path, strings.NewReader(r.body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range r.header {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&body)
	return resp.StatusCode, body
}

func TestGoodRequestIsRecorded(t *testing.T) {
	ca := testpki.NewCA(t)
	s := apnstest.Start(t, ca, topic)
	c := client(t, ca, true)

	if status, body := do(t, c, s.URL, goodRequest()); status != 200 {
		t.Fatalf("status %d %v, want 200", status, body)
	}
	r := s.WaitRequests(t, 1, 5*time.Second)[0]
	if r.Token != goodToken || r.Topic != topic || r.PushType != "background" || r.AccountID != "acct-1" || r.ClientUID != topic || r.ClientSerial == "" || r.Mailboxes != nil {
		t.Errorf("recorded %+v", r)
	}

	// With the mailboxes, as Apple's server sends them: MD5 hex of each name.
	withM := goodRequest()
	withM.body = `{"aps":{"account-id":"acct-1","m":["7e33429f656f1e6e9d79b29c3f82c57e","f4c6f851b00d5518bf888815de279aba"]}}`
	if status, body := do(t, c, s.URL, withM); status != 200 {
		t.Fatalf("with m: status %d %v, want 200", status, body)
	}
	r = s.WaitRequests(t, 2, 5*time.Second)[1]
	if want := []string{apnstest.MailboxHash("INBOX"), apnstest.MailboxHash("Notes")}; !slices.Equal(r.Mailboxes, want) {
		t.Errorf("recorded mailboxes %q, want %q (INBOX, Notes)", r.Mailboxes, want)
	}

	s.SetResponse(goodToken, 410, "Unregistered")
	s.QueueResponse(goodToken, 500, "InternalServerError")
	if status, body := do(t, c, s.URL, goodRequest()); status != 500 || body["reason"] != "InternalServerError" {
		t.Errorf("queued answer: %d %v", status, body)
	}
	status, body := do(t, c, s.URL, goodRequest())
	if status != 410 || body["reason"] != "Unregistered" || body["timestamp"] == nil {
		t.Errorf("410 answer: %d %v, want reason and timestamp", status, body)
	}
	if errs := s.Errors(); len(errs) != 0 {
		t.Errorf("errors for good requests: %q", errs)
	}
}

func TestViolationsAreReported(t *testing.T) {
	for name, tc := range map[string]struct {
		mutate func(*request)
		http1  bool
		reason string
		err    string
	}{
		"priority":        {mutate: func(r *request) { r.header["apns-priority"] = "7" }, reason: "BadPriority", err: "apns-priority"},
		"alert":           {mutate: func(r *request) { r.header["apns-push-type"] = "alert" }, reason: "InvalidPushType", err: "apns-push-type"},
		"topic":           {mutate: func(r *request) { r.header["apns-topic"] = "com.example" }, reason: "BadTopic", err: "apns-topic"},
		"no expiration":   {mutate: func(r *request) { delete(r.header, "apns-expiration") }, reason: "BadExpirationDate", err: "apns-expiration"},
		"short expiry":    {mutate: func(r *request) { r.header["apns-expiration"] = strconv.FormatInt(time.Now().Unix(), 10) }, reason: "BadExpirationDate", err: "now+24h"},
		"path":            {mutate: func(r *request) { r.path = "/3/device/abc" }, reason: "BadPath", err: "path"},
		"method":          {mutate: func(r *request) { r.method = http.MethodPut }, reason: "MethodNotAllowed", err: "method"},
		"extra aps key":   {mutate: func(r *request) { r.body = `{"aps":{"account-id":"a","alert":"x"}}` }, reason: "BadMessage", err: "account-id"},
		"extra top key":   {mutate: func(r *request) { r.body = `{"aps":{"account-id":"a"},"x":1}` }, reason: "BadMessage", err: "aps"},
		"key case":        {mutate: func(r *request) { r.body = `{"aps":{"Account-Id":"a"}}` }, reason: "BadMessage", err: "account-id"},
		"trailing data":   {mutate: func(r *request) { r.body = `{"aps":{"account-id":"a"}} {}` }, reason: "BadMessage", err: "after"},
		"empty id":        {mutate: func(r *request) { r.body = `{"aps":{"account-id":""}}` }, reason: "BadMessage", err: "empty"},
		"HTTP/1.1":        {http1: true, reason: "BadMessage", err: "HTTP/2.0"},
		"non-string id":   {mutate: func(r *request) { r.body = `{"aps":{"account-id":1}}` }, reason: "BadMessage", err: "account-id"},
		"not json at all": {mutate: func(r *request) { r.body = `hello` }, reason: "BadMessage", err: "body"},
		"m not a list":    {mutate: func(r *request) { r.body = `{"aps":{"account-id":"a","m":"x"}}` }, reason: "BadMessage", err: "m:"},
		"m empty":         {mutate: func(r *request) { r.body = `{"aps":{"account-id":"a","m":[]}}` }, reason: "BadMessage", err: "0 entries"},
		"m null":          {mutate: func(r *request) { r.body = `{"aps":{"account-id":"a","m":null}}` }, reason: "BadMessage", err: "0 entries"},
		"m not md5":       {mutate: func(r *request) { r.body = `{"aps":{"account-id":"a","m":["INBOX"]}}` }, reason: "BadMessage", err: "MD5"},
		"m upper hex":     {mutate: func(r *request) { r.body = `{"aps":{"account-id":"a","m":["7E33429F656F1E6E9D79B29C3F82C57E"]}}` }, reason: "BadMessage", err: "MD5"},
		"m twice": {mutate: func(r *request) {
			r.body = `{"aps":{"account-id":"a","m":["7e33429f656f1e6e9d79b29c3f82c57e","7e33429f656f1e6e9d79b29c3f82c57e"]}}`
		}, reason: "BadMessage", err: "twice"},
		"m too long": {mutate: func(r *request) {
			r.body = `{"aps":{"account-id":"a","m":[` + strings.Repeat(`"7e33429f656f1e6e9d79b29c3f82c57e",`, 20) + `"f4c6f851b00d5518bf888815de279aba"]}}`
		}, reason: "BadMessage", err: "21 entries"},
	} {
		t.Run(name, func(t *testing.T) {
			rec := &recordingTB{TB: t}
			ca := testpki.NewCA(t)
			s := apnstest.Start(rec, ca, topic)
			r := goodRequest()
			if tc.mutate != nil {
				tc.mutate(&r)
			}
			status, body := do(t, client(t, ca, !tc.http1), s.URL, r)
			if status != 400 || body["reason"] != tc.reason {
				t.Errorf("answer %d %v, want 400 %s", status, body, tc.reason)
			}
			errs := s.Errors()
			if len(errs) == 0 || !strings.Contains(strings.Join(errs, "\n"), tc.err) {
				t.Errorf("errors %q, want one mentioning %q", errs, tc.err)
			}
		})
	}
}

func TestUntrustedClientIsRejected(t *testing.T) {
	ca := testpki.NewCA(t)
	s := apnstest.Start(t, ca, topic)
	other := testpki.NewCA(t)
	tr := &http.Transport{TLSClientConfig: &tls.Config{
		Certificates: []tls.Certificate{other.ClientCert(t, topic)},
		RootCAs:      ca.Pool(),
	}}
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodPost, s.URL+"/3/device/"+goodToken, strings.NewReader("{}"))
	if resp, err := (&http.Client{Transport: tr}).Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("request with an untrusted client certificate got %s", resp.Status)
	}
	if n := len(s.Requests()); n != 0 {
		t.Errorf("%d requests recorded", n)
	}
}
