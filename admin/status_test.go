package admin

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xapsproxy/xapsproxy/event"
	"github.com/xapsproxy/xapsproxy/push"
	"github.com/xapsproxy/xapsproxy/store"
	"github.com/xapsproxy/xapsproxy/watch"
)

const (
	aliceToken = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90"
	testTopic  = "com.apple.mail.XServer.0f1e2d3c"
	adminToken = "0123456789abcdef0123456789abcdef"
	hostile    = `<script>alert(1)</script>"'&x`
)

type fakeAccounts map[string]watch.AccountStatus

func (f fakeAccounts) Account(user string) (watch.AccountStatus, bool) {
	a, ok := f[user]
	return a, ok
}

// fakePushes records test pushes and answers 200.
type fakePushes struct {
	mu     sync.Mutex
	tested []string
	recent map[string][]push.RecentPush
}

func (f *fakePushes) RecentPushes(user string) []push.RecentPush {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.recent[user]
}

func (f *fakePushes) TestPush(_ context.Context, user string) ([]push.Result, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tested = append(f.tested, user)
	return []push.Result{{User: user, DeviceToken: aliceToken, AccountID: "acct-1",
		Response: push.Response{StatusCode: 200, APNsID: "11111111-2222-3333-4444-555555555555"}, Action: push.Delivered}}, nil
}

func (f *fakePushes) tests() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.tested...)
}

type statusEnv struct {
	t      *testing.T
	st     store.Store
	pushes *fakePushes
	srv    *httptest.Server
}

// newStatusEnv serves the admin handler over a store in which alice and a
// user with a hostile name have a device each.
func newStatusEnv(t *testing.T, token string) *statusEnv {
	t.Helper()
	st, err := store.Open(t.Context(), filepath.Join(t.TempDir(), "x.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	now := time.Now()
	for _, r := range []store.Registration{
		{User: "alice", DeviceToken: aliceToken, AccountID: "acct-1", Subtopic: "com.apple.mobilemail", Mailboxes: []string{"INBOX", "Notes"}, Version: 2, Topic: testTopic, Registered: now.Add(-40 * 24 * time.Hour), Renewed: now.Add(-time.Hour)},
		{User: hostile, DeviceToken: strings.Repeat("ef", 32), AccountID: "<b>acct</b>", Mailboxes: []string{"<i>INBOX</i>"}, Version: 1, Topic: "other.topic", Registered: now.Add(-40 * 24 * time.Hour), Renewed: now.Add(-35 * 24 * time.Hour)},
	} {
		if err := st.Register(t.Context(), r); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.RecordPush(t.Context(), "alice", aliceToken, now.Add(-time.Minute), "200"); err != nil {
		t.Fatal(err)
	}
	for _, user := range []string{"alice", hostile} { // a push owed to each
		if _, err := st.CommitMailbox(t.Context(), user, "Notes", nil, &store.OutboxEntry{Changed: true, At: now}); err != nil {
			t.Fatal(err)
		}
	}
	acc := fakeAccounts{"alice": {User: "alice", Source: watch.SourceIdle, Connection: true, State: watch.StateWatching, Since: now.Add(-time.Hour),
		Mailboxes: []string{"INBOX", "Notes"}, LastError: "idle: connection reset", LastErrorAt: now.Add(-2 * time.Hour),
		LastEvent: watch.SeenEvent{At: now.Add(-time.Minute), Mailbox: "INBOX", Kind: event.KindNew}}}
	ps := &fakePushes{recent: map[string][]push.RecentPush{"alice": {{At: now.Add(-time.Minute), Token: store.ShortToken(aliceToken), AccountID: "acct-1",
		Mailboxes: []string{"INBOX"}, Kind: push.PushNewMail, Status: 200, APNsID: "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee", Action: push.Delivered}}}}
	h := Handler(Options{Store: st, Token: token, Accounts: acc, PushStatus: ps, Topic: testTopic, CanonicalUser: strings.ToLower})
	e := &statusEnv{t: t, st: st, pushes: ps, srv: httptest.NewServer(h)}
	t.Cleanup(e.srv.Close)
	return e
}

func (e *statusEnv) do(req *http.Request) (*http.Response, string) {
	e.t.Helper()
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err := c.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res, string(b)
}

func (e *statusEnv) get(path string, header ...string) (*http.Response, string) {
	e.t.Helper()
	req, _ := http.NewRequest("GET", e.srv.URL+path, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	return e.do(req)
}

// The page of a user shows the device by its short token only, the watcher,
// the recent pushes, the phone checklist, and the test-push form.
func TestStatusPageShowsDevice(t *testing.T) {
	e := newStatusEnv(t, "")
	res, body := e.get("/status?user=ALICE")
	if res.StatusCode != 200 {
		t.Fatalf("GET /status?user=ALICE = %d\n%s", res.StatusCode, body)
	}
	for _, want := range []string{
		`<code class="token">a1b2c3d4</code>`, "acct-1", "INBOX, Notes", testTopic,
		"watching (source idle) since", "idle: connection reset", "INBOX, new",
		"aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee", "Fetch New Data", "courier.push.apple.com",
		`action="/status/test-push"`, `name="csrf"`, "Send a test push",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	if strings.Contains(body, aliceToken) || strings.Contains(body, aliceToken[:9]) {
		t.Error("page shows more of the device token than its first 8 digits")
	}
	for h, want := range map[string]string{
		"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
		"X-Frame-Options":         "DENY",
		"Cache-Control":           "no-store",
	} {
		if got := res.Header.Get(h); !strings.HasPrefix(got, want) {
			t.Errorf("%s = %q, want %q", h, got, want)
		}
	}
	// The index lists the accounts with their devices.
	_, body = e.get("/status")
	if !strings.Contains(body, `<a href="/status?user=alice">alice</a></td><td>1</td>`) {
		t.Errorf("index lacks alice with one device:\n%s", body)
	}
}

// A user name is whatever a client logged in with: the page escapes it
// everywhere, and the hostile user's registration data too.
func TestStatusPageEscapes(t *testing.T) {
	e := newStatusEnv(t, "")
	for _, path := range []string{"/status", "/status?user=" + url.QueryEscape(hostile)} {
		_, body := e.get(path)
		for _, bad := range []string{"<script>", "<b>acct", "<i>INBOX"} {
			if strings.Contains(body, bad) {
				t.Errorf("%s contains %q unescaped", path, bad)
			}
		}
		if !strings.Contains(body, "&lt;script&gt;alert(1)&lt;/script&gt;") {
			t.Errorf("%s does not show the hostile name escaped", path)
		}
	}
	_, body := e.get("/status?user=" + url.QueryEscape(hostile))
	if !strings.Contains(body, "stale") || !strings.Contains(body, "not the certificate's topic") {
		t.Error("the hostile user's stale registration with another topic is not flagged")
	}
}

// The JSON form has the report's fields, with the short token.
func TestStatusJSON(t *testing.T) {
	e := newStatusEnv(t, "")
	res, body := e.get("/status.json?user=alice")
	if res.StatusCode != 200 || res.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("GET /status.json = %d %s\n%s", res.StatusCode, res.Header.Get("Content-Type"), body)
	}
	var doc map[string]any
	if err := json.Unmarshal([]byte(body), &doc); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"user", "generated", "live", "topic", "registrations", "watch", "recent_pushes", "outbox", "hints"} {
		if _, ok := doc[k]; !ok {
			t.Errorf("JSON lacks %q", k)
		}
	}
	var r Report
	if err := json.Unmarshal([]byte(body), &r); err != nil {
		t.Fatal(err)
	}
	if r.User != "alice" || !r.Live || len(r.Registrations) != 1 || r.Registrations[0].Token != "a1b2c3d4" ||
		r.Registrations[0].LastPushResult != "200" || r.Registrations[0].Version != 2 || r.Registrations[0].Stale ||
		r.Watch == nil || r.Watch.State != "watching" || r.Watch.LastEvent == nil || r.Watch.LastEvent.Kind != "new" ||
		len(r.RecentPushes) != 1 || r.RecentPushes[0].Status != 200 || r.RecentPushes[0].APNsID == "" ||
		len(r.Outbox) != 1 || r.Outbox[0].Mailbox != "Notes" || r.Outbox[0].Kind != "changed" {
		t.Errorf("report = %+v", r)
	}
	if strings.Contains(body, aliceToken) {
		t.Error("JSON shows the whole device token")
	}
	if res, _ := e.get("/status.json"); res.StatusCode != http.StatusBadRequest {
		t.Errorf("/status.json without a user = %d, want 400", res.StatusCode)
	}
}

// With a token: the bearer header or the cookie that ?token= sets (after
// a redirect that drops it from the address); anything else is 401, and
// /healthz stays open. Without one, nothing is asked.
func TestStatusAuth(t *testing.T) {
	e := newStatusEnv(t, adminToken)
	for _, tt := range []struct {
		name   string
		path   string
		header []string
		want   int
	}{
		{"no credentials", "/status?user=alice", nil, 401},
		{"no credentials, JSON", "/status.json?user=alice", nil, 401},
		{"no credentials, metrics", "/metrics", nil, 401},
		{"no credentials, test push form", "/status/test-push", nil, 401},
		{"wrong bearer", "/status?user=alice", []string{"Authorization", "Bearer wrong-token-0123456789"}, 401},
		{"wrong token in the address", "/status?token=wrong-token-0123456789", nil, 401},
		{"the token itself as cookie", "/status", []string{"Cookie", cookieName + "=" + adminToken}, 401},
		{"bearer", "/status.json?user=alice", []string{"Authorization", "Bearer " + adminToken}, 200},
		{"bearer, metrics", "/metrics", []string{"Authorization", "Bearer " + adminToken}, 200},
		{"healthz", "/healthz", nil, 200},
	} {
		res, body := e.get(tt.path, tt.header...)
		if res.StatusCode != tt.want {
			t.Errorf("%s: GET %s = %d, want %d", tt.name, tt.path, res.StatusCode, tt.want)
		}
		if res.StatusCode == 401 && (strings.Contains(body, "alice") || res.Header.Get("WWW-Authenticate") == "") {
			t.Errorf("%s: 401 shows data or no WWW-Authenticate: %s", tt.name, body)
		}
	}

	// The browser's way in.
	res, _ := e.get("/status?user=alice&token=" + adminToken)
	if res.StatusCode != http.StatusSeeOther || res.Header.Get("Location") != "/status?user=alice" {
		t.Fatalf("GET /status?token= = %d to %q, want 303 to /status?user=alice", res.StatusCode, res.Header.Get("Location"))
	}
	var cookie *http.Cookie
	for _, c := range res.Cookies() {
		if c.Name == cookieName {
			cookie = c
		}
	}
	if cookie == nil || !cookie.HttpOnly || cookie.SameSite != http.SameSiteStrictMode || cookie.Path != "/" || strings.Contains(cookie.Value, adminToken) {
		t.Fatalf("cookie = %+v, want HttpOnly, SameSite=Strict, Path=/, not the token", cookie)
	}
	jar, _ := cookiejar.New(nil)
	u, _ := url.Parse(e.srv.URL)
	jar.SetCookies(u, []*http.Cookie{cookie})
	c := &http.Client{Jar: jar}
	res2, err := c.Get(e.srv.URL + "/status?user=alice")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res2.Body)
	res2.Body.Close()
	if res2.StatusCode != 200 || !strings.Contains(string(b), "a1b2c3d4") {
		t.Errorf("with the cookie: %d", res2.StatusCode)
	}

	open := newStatusEnv(t, "")
	if res, _ := open.get("/status?user=alice"); res.StatusCode != 200 {
		t.Errorf("without a token configured: %d, want 200", res.StatusCode)
	}
	for host, want := range map[string]int{"localhost:9143": 200, "[::1]:9143": 200, "127.0.0.2": 200, "rebound.example:9143": 421, "192.0.2.1:9143": 421} {
		req, _ := http.NewRequest("GET", open.srv.URL+"/status?user=alice", nil)
		req.Host = host
		if res, body := open.do(req); res.StatusCode != want || want != 200 && strings.Contains(body, "a1b2c3d4") {
			t.Errorf("without a token, Host %s: %d, want %d", host, res.StatusCode, want)
		}
	}
	req, _ := http.NewRequest("GET", open.srv.URL+"/healthz", nil)
	req.Host = "rebound.example"
	if res, _ := open.do(req); res.StatusCode != 200 {
		t.Errorf("/healthz with another Host: %d, want 200", res.StatusCode)
	}
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// The test push takes a POST from the page only: with the form's CSRF
// token for that user, and not from another site. Refused requests send
// nothing.
func TestStatusTestPushCSRF(t *testing.T) {
	e := newStatusEnv(t, "")
	_, page := e.get("/status?user=alice")
	m := csrfField.FindStringSubmatch(page)
	if m == nil {
		t.Fatal("no CSRF field in the form")
	}
	csrf := m[1]
	_, bobPage := e.get("/status?user=" + url.QueryEscape(hostile))
	otherCSRF := csrfField.FindStringSubmatch(bobPage)[1]

	post := func(form url.Values, header ...string) (*http.Response, string) {
		req, _ := http.NewRequest("POST", e.srv.URL+"/status/test-push", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		return e.do(req)
	}
	for _, tt := range []struct {
		name   string
		form   url.Values
		header []string
	}{
		{"no CSRF token", url.Values{"user": {"alice"}}, nil},
		{"wrong CSRF token", url.Values{"user": {"alice"}, "csrf": {"AAAA"}}, nil},
		{"another user's CSRF token", url.Values{"user": {"alice"}, "csrf": {otherCSRF}}, nil},
		{"foreign Origin", url.Values{"user": {"alice"}, "csrf": {csrf}}, []string{"Origin", "https://evil.example"}},
		{"cross-site fetch", url.Values{"user": {"alice"}, "csrf": {csrf}}, []string{"Sec-Fetch-Site", "cross-site"}},
	} {
		res, body := post(tt.form, tt.header...)
		if res.StatusCode != http.StatusForbidden {
			t.Errorf("%s: %d, want 403\n%s", tt.name, res.StatusCode, body)
		}
	}
	if got := e.pushes.tests(); len(got) != 0 {
		t.Fatalf("refused requests sent test pushes for %q", got)
	}
	if res, _ := e.get("/status/test-push?user=alice&csrf=" + url.QueryEscape(csrf)); res.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET /status/test-push = %d, want 405", res.StatusCode)
	}

	res, body := post(url.Values{"user": {"alice"}, "csrf": {csrf}}, "Origin", e.srv.URL, "Sec-Fetch-Site", "same-origin")
	if res.StatusCode != 200 || !strings.Contains(body, "11111111-2222-3333-4444-555555555555") || !strings.Contains(body, "200 (delivered)") {
		t.Errorf("test push from the page: %d\n%s", res.StatusCode, body)
	}
	if got := e.pushes.tests(); len(got) != 1 || got[0] != "alice" {
		t.Errorf("test pushes sent for %q, want alice once", got)
	}
}

// An unknown user's page says so, with what to check.
func TestStatusUnknownUser(t *testing.T) {
	e := newStatusEnv(t, "")
	_, body := e.get("/status?user=nobody")
	if !strings.Contains(body, "No device registered for this user") || !strings.Contains(body, "proxy&#39;s host name") || strings.Contains(body, "Send a test push") {
		t.Errorf("unknown user's page:\n%s", body)
	}
}

// The text form shows control characters from clients' data escaped, so
// that a user name cannot drive the operator's terminal.
func TestStatusTextEscapesControls(t *testing.T) {
	var b strings.Builder
	r := Report{User: "evil\x1b[2J\x07", Generated: time.Now(),
		Registrations: []RegistrationReport{{Token: "a1b2c3d4", AccountID: "acct\x1b]0;pwned\x07", Mailboxes: []string{"IN\rBOX"}}}}
	if err := WriteText(&b, r); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	if strings.ContainsAny(out, "\x1b\x07\r") {
		t.Errorf("text output has raw control characters: %q", out)
	}
	if !strings.Contains(out, `user evil\x1b[2J\x07`) || !strings.Contains(out, `IN\x0dBOX`) {
		t.Errorf("text output does not show them escaped: %q", out)
	}
}

// The cookie /status?token= sets is a session: it stops working after
// sessionFor (a copy of it that leaks, say to another service on the same
// host name, which browsers send it to whatever the port, does not open
// the page for good), and its expiry cannot be moved by the holder.
func TestStatusCookieExpires(t *testing.T) {
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "secret page") })
	h := protect(ok, adminToken, clock)
	do := func(path string, c *http.Cookie) *httptest.ResponseRecorder {
		w := httptest.NewRecorder()
		req := httptest.NewRequest("GET", path, nil)
		if c != nil {
			req.AddCookie(c)
		}
		h.ServeHTTP(w, req)
		return w
	}
	login := do("/status?token="+adminToken, nil)
	cookies := login.Result().Cookies()
	if login.Code != http.StatusSeeOther || len(cookies) != 1 {
		t.Fatalf("GET /status?token= = %d with cookies %v", login.Code, cookies)
	}
	c := cookies[0]
	if c.MaxAge <= 0 || c.MaxAge > int(sessionFor.Seconds()) {
		t.Errorf("cookie Max-Age = %d, want at most %v", c.MaxAge, sessionFor)
	}
	if w := do("/status", c); w.Code != 200 {
		t.Fatalf("with the fresh cookie: %d", w.Code)
	}
	// The holder moves the expiry on: refused.
	if unix, mac, found := strings.Cut(c.Value, "."); found {
		forged := *c
		forged.Value = unix + "9." + mac
		if w := do("/status", &forged); w.Code != http.StatusUnauthorized {
			t.Errorf("with the expiry changed: %d, want 401", w.Code)
		}
	}
	mu.Lock()
	now = now.Add(sessionFor + time.Second)
	mu.Unlock()
	if w := do("/status", c); w.Code != http.StatusUnauthorized || strings.Contains(w.Body.String(), "secret page") {
		t.Errorf("with the cookie after sessionFor: %d, want 401", w.Code)
	}
}

// Printable also shows Unicode format characters (a bidi override can make
// "alice\u202egpj.exe" read as another name) and C1 controls, and keeps
// newlines and ordinary non-ASCII letters.
func TestPrintableFormatCharacters(t *testing.T) {
	for in, want := range map[string]string{
		"alice\u202egnp":  `alice\u202egnp`,
		"zero\u200dwidth": `zero\u200dwidth`,
		"c1\u009bcsi":     `c1\x9bcsi`,
		"two\nlines":      "two\nlines",
		"Åsa Ωmega":       "Åsa Ωmega",
		"bad\xffutf8":     "bad\ufffdutf8",
	} {
		if got := Printable(in); got != want {
			t.Errorf("Printable(%q) = %q, want %q", in, got, want)
		}
	}
}
