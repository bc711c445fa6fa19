package dovecot_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/xapsproxy/xapsproxy/dovecot"
	"github.com/xapsproxy/xapsproxy/event"
	"github.com/xapsproxy/xapsproxy/internal/testlog"
)

type hintRecorder struct {
	mu    sync.Mutex
	hints []event.Hint
}

func (r *hintRecorder) add(h event.Hint) {
	r.mu.Lock()
	r.hints = append(r.hints, h)
	r.mu.Unlock()
}

func (r *hintRecorder) take() []event.Hint {
	r.mu.Lock()
	defer r.mu.Unlock()
	h := r.hints
	r.hints = nil
	return h
}

func newTestHandler(t *testing.T, maxBody int64) (*dovecot.Handler, *hintRecorder, string) {
	t.Helper()
	rec := &hintRecorder{}
	h, err := dovecot.NewHandler(dovecot.Options{Secret: testSecret, Hint: rec.add, Logger: testlog.New(t, testSecret), MaxBody: maxBody})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return h, rec, srv.URL
}

func do(t *testing.T, method, url, auth, body string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, strings.TrimSpace(string(b))
}

const goodBody = `{"user":"alice","events":[{"mailbox":"INBOX","what":"arrived","uidvalidity":7,"uidnext":43}]}`

func TestHandlerAccepts(t *testing.T) {
	t.Parallel()
	h, rec, url := newTestHandler(t, 0)
	body := `{"user":"alice","future":{"x":1},"events":[
		{"mailbox":"INBOX","what":"arrived","uidvalidity":7,"uidnext":43},
		{"mailbox":"INBOX","what":"flags","uidvalidity":7},
		{"mailbox":"INBOX","what":"arrived","uidvalidity":7,"uidnext":41,"extra":true},
		{"mailbox":"INBOX","what":"arrived","uidnext":45},
		{"mailbox":"Tab\tQuote\"Back\\\u00e9\u0001","what":"expunged"},
		{"mailbox":"Old","what":"gone"},
		{"mailbox":"New","what":"unknown"}]}`
	status, _, text := do(t, "POST", url+dovecot.Path, "Bearer "+testSecret, body)
	if status != http.StatusNoContent || text != "" {
		t.Fatalf("answer %d %q, want 204 and no body", status, text)
	}
	want := []event.Hint{
		{User: "alice", Mailbox: "INBOX", What: event.Arrived, UIDValidity: 7, UIDNext: 45},
		{User: "alice", Mailbox: "INBOX", What: event.Flags, UIDValidity: 7},
		{User: "alice", Mailbox: "Tab\tQuote\"Back\\é\x01", What: event.Expunged},
		{User: "alice", Mailbox: "Old", What: event.Gone},
		{User: "alice", Mailbox: "New", What: event.Unknown},
	}
	if got := rec.take(); !reflect.DeepEqual(got, want) {
		t.Errorf("hints\n%+v\nwant one per (mailbox, what)\n%+v", got, want)
	}
	// The scheme is case-insensitive (RFC 9110).
	if status, _, _ := do(t, "POST", url+dovecot.Path, "bearer "+testSecret, goodBody); status != http.StatusNoContent {
		t.Errorf("lower-case bearer: %d", status)
	}
	if st := h.Stats(); st != (dovecot.Stats{Accepted: 2, Hints: 6}) {
		t.Errorf("stats %+v", st)
	}
}

func TestHandlerUnauthorized(t *testing.T) {
	t.Parallel()
	h, rec, url := newTestHandler(t, 0)
	for _, auth := range []string{"", "Bearer", "Bearer ", "Bearer " + testSecret[:len(testSecret)-1], "Bearer " + testSecret + "x",
		"Bearer  " + testSecret, "Basic " + testSecret, testSecret} {
		status, header, _ := do(t, "POST", url+dovecot.Path, auth, goodBody)
		if status != http.StatusUnauthorized || header.Get("WWW-Authenticate") != `Bearer realm="xapsproxy"` {
			t.Errorf("Authorization %q: %d, WWW-Authenticate %q; want 401 with a Bearer challenge", auth, status, header.Get("WWW-Authenticate"))
		}
	}
	if got := rec.take(); got != nil {
		t.Errorf("hints from refused requests: %+v", got)
	}
	if st := h.Stats(); st != (dovecot.Stats{Unauthorized: 8}) {
		t.Errorf("stats %+v", st)
	}
}

func TestHandlerRefuses(t *testing.T) {
	t.Parallel()
	h, rec, url := newTestHandler(t, 512)
	auth := "Bearer " + testSecret
	ev := func(e string) string { return `{"user":"alice","events":[` + e + `]}` }
	tests := []struct {
		name, method, path, body string
		status                   int
		reason                   string
	}{
		{"GET", "GET", dovecot.Path, "", 405, "only POST"},
		{"PUT", "PUT", dovecot.Path, goodBody, 405, "only POST"},
		{"other path", "POST", "/events", goodBody, 404, "not found; Dovecot's events go to /dovecot/events"},
		{"bad JSON", "POST", dovecot.Path, `{"user":"alice","events":[`, 400, "bad JSON: unexpected EOF"},
		{"not an object", "POST", dovecot.Path, `[]`, 400, "bad JSON: json: cannot unmarshal"},
		{"two objects", "POST", dovecot.Path, goodBody + goodBody, 400, "bad JSON: data after the object"},
		{"not UTF-8", "POST", dovecot.Path, ev(`{"mailbox":"a` + "\xff" + `","what":"flags"}`), 400, "body is not UTF-8"},
		{"empty body", "POST", dovecot.Path, "", 400, "bad JSON: EOF"},
		{"no user", "POST", dovecot.Path, `{"events":[{"mailbox":"INBOX","what":"flags"}]}`, 400, "user is missing or empty"},
		{"no events", "POST", dovecot.Path, `{"user":"alice","events":[]}`, 400, "no events"},
		{"no mailbox", "POST", dovecot.Path, ev(`{"what":"flags"}`), 400, "events[0]: mailbox is missing or empty"},
		{"unknown what", "POST", dovecot.Path, ev(`{"mailbox":"INBOX","what":"flags"},{"mailbox":"INBOX","what":"moved"}`), 400,
			`events[1]: what "moved" is not one of arrived, flags, expunged, gone, unknown`},
		{"UID over 32 bits", "POST", dovecot.Path, ev(`{"mailbox":"INBOX","what":"arrived","uidnext":4294967296}`), 400, "bad JSON: json: cannot unmarshal number 4294967296"},
		{"negative UID", "POST", dovecot.Path, ev(`{"mailbox":"INBOX","what":"arrived","uidvalidity":-1}`), 400, "bad JSON: json: cannot unmarshal number -1"},
		{"too big", "POST", dovecot.Path, ev(`{"mailbox":"` + strings.Repeat("x", 600) + `","what":"flags"}`), 413, "body over 512 bytes"},
	}
	for _, tt := range tests {
		status, header, text := do(t, tt.method, url+tt.path, auth, tt.body)
		if status != tt.status || !strings.HasPrefix(text, tt.reason) {
			t.Errorf("%s: %d %q, want %d %q", tt.name, status, text, tt.status, tt.reason)
		}
		if status == 405 && header.Get("Allow") != "POST" {
			t.Errorf("%s: Allow %q", tt.name, header.Get("Allow"))
		}
	}
	if got := rec.take(); got != nil {
		t.Errorf("hints from refused requests: %+v", got)
	}
	if st := h.Stats(); st != (dovecot.Stats{Refused: uint64(len(tests))}) {
		t.Errorf("stats %+v", st)
	}
}

func TestHandlerTooManyEvents(t *testing.T) {
	t.Parallel()
	_, _, url := newTestHandler(t, 1<<20)
	events := strings.Repeat(`{"mailbox":"INBOX","what":"flags"},`, 1001)
	body := `{"user":"alice","events":[` + strings.TrimSuffix(events, ",") + `]}`
	if status, _, text := do(t, "POST", url+dovecot.Path, "Bearer "+testSecret, body); status != 400 || text != "1001 events, at most 1000" {
		t.Errorf("%d %q", status, text)
	}
}

func TestNewHandlerChecks(t *testing.T) {
	t.Parallel()
	hint := func(event.Hint) {}
	for _, tt := range []struct {
		opts dovecot.Options
		want string
	}{
		{dovecot.Options{Secret: "short", Hint: hint}, "dovecot: secret of 5 bytes, want at least 16"},
		{dovecot.Options{Secret: testSecret}, "dovecot: Options.Hint is nil"},
		{dovecot.Options{Secret: testSecret, Hint: hint, MaxBody: -1}, "dovecot: Options.MaxBody is negative"},
	} {
		if _, err := dovecot.NewHandler(tt.opts); err == nil || err.Error() != tt.want {
			t.Errorf("%+v: %v, want %q", tt.opts, err, tt.want)
		}
	}
}
