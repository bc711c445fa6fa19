package dovecot_test

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xapsproxy/xapsproxy/dovecot"
	"github.com/xapsproxy/xapsproxy/event"
	"github.com/xapsproxy/xapsproxy/internal/dovecotrun"
	"github.com/xapsproxy/xapsproxy/internal/dovecottest"
	"github.com/xapsproxy/xapsproxy/internal/testlog"
)

const testSecret = "0123456789abcdef-test-secret"

// The values in contrib/dovecot/95-xapsproxy.conf that a site changes.
const (
	confScript = "lua:file=/etc/dovecot/xapsproxy.lua"
	confURL    = "http://127.0.0.1:9144/dovecot/events"
	confSecret = "xapsproxy_secret = </etc/xapsproxy/events-secret"
)

// posted is one request the sink received, with the handler's answer.
type posted struct {
	Auth        string
	ContentType string
	Body        string
	Status      int
	Hints       []event.Hint
}

// sink is the real Handler behind the real Server on a loopback port,
// recording every request and the hints each produced.
type sink struct {
	URL     string
	Handler *dovecot.Handler

	mu    sync.Mutex
	posts []posted
	hints []event.Hint // of the request being handled
}

func newSink(t testing.TB) *sink {
	t.Helper()
	s := &sink{}
	h, err := dovecot.NewHandler(dovecot.Options{
		Secret: testSecret,
		Hint:   func(h event.Hint) { s.hints = append(s.hints, h) }, // under s.mu, see ServeHTTP
		Logger: testlog.New(t, testSecret),
	})
	if err != nil {
		t.Fatal(err)
	}
	s.Handler = h
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := dovecot.NewServer(s, testlog.New(t, testSecret))
	go srv.Serve(ln) // ends when Close closes the listener
	t.Cleanup(func() { srv.Close() })
	s.URL = "http://" + ln.Addr().String() + dovecot.Path
	return s
}

func (s *sink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(body))
	rec := &statusWriter{ResponseWriter: w}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hints = nil
	s.Handler.ServeHTTP(rec, r)
	s.posts = append(s.posts, posted{
		Auth:        r.Header.Get("Authorization"),
		ContentType: r.Header.Get("Content-Type"),
		Body:        string(body),
		Status:      rec.status,
		Hints:       s.hints,
	})
}

// take returns the requests received since the last take.
func (s *sink) take() []posted {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.posts
	s.posts = nil
	return p
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// contribFile reads a file of contrib/dovecot.
func contribFile(t testing.TB, name string) string {
	t.Helper()
	root, err := dovecotrun.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(root, "contrib", "dovecot", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// hookConfig is contrib/dovecot/95-xapsproxy.conf as shipped, with the
// script in the instance directory, the given URL and the secret line
// replaced by secretLine.
func hookConfig(t testing.TB, url, secretLine string) string {
	t.Helper()
	return hookConfigScript(t, "xapsproxy.lua", url, secretLine)
}

// hookConfigScript is hookConfig with another script of the instance
// directory.
func hookConfigScript(t testing.TB, script, url, secretLine string) string {
	t.Helper()
	conf := contribFile(t, "95-xapsproxy.conf")
	for _, s := range []string{confScript, confURL, confSecret} {
		if strings.Count(conf, s) != 1 {
			t.Fatalf("95-xapsproxy.conf: %q is not there exactly once", s)
		}
	}
	return strings.NewReplacer(confScript, "lua:file=@DIR@/"+script, confURL, url, confSecret, secretLine).Replace(conf)
}

// startHooked starts a Dovecot with the shipped snippet and script,
// posting to url with testSecret.
func startHooked(t testing.TB, url string) *dovecottest.Dovecot {
	t.Helper()
	return startWith(t, hookConfig(t, url, "xapsproxy_secret = "+testSecret))
}

func startWith(t testing.TB, extra string) *dovecottest.Dovecot {
	t.Helper()
	d := dovecottest.Start(t, dovecottest.Options{ExtraConfig: extra})
	// Dovecot loads the script when it sets a user up, so it need only be
	// in place before the first delivery or login.
	if err := os.WriteFile(filepath.Join(d.Dir, "xapsproxy.lua"), []byte(contribFile(t, "xapsproxy.lua")), 0o644); err != nil {
		t.Fatal(err)
	}
	return d
}

const testMsg = "From: sender@example.com\r\n" +
	"To: alice@example.com\r\n" +
	"Subject: hello\r\n" +
	"Message-ID: <1@example.com>\r\n" +
	"\r\n" +
	"Hello Alice.\r\n"

// lmtp is one LMTP connection, for deliveries to several recipients at
// once and for timing deliveries one after another.
type lmtp struct {
	l *dovecotrun.LMTP
}

func dialLMTP(t testing.TB, addr string) *lmtp {
	t.Helper()
	l, err := dovecotrun.DialLMTP(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return &lmtp{l}
}

// deliver delivers msg to every rcpt in one transaction and returns how
// long it took, from MAIL FROM to the last recipient's answer.
func (l *lmtp) deliver(t testing.TB, msg string, rcpts ...string) time.Duration {
	t.Helper()
	start := time.Now()
	if err := l.l.Deliver([]byte(msg), rcpts...); err != nil {
		t.Fatal(err)
	}
	return time.Since(start)
}
