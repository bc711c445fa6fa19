package admin

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/xapsproxy/xapsproxy/push"
	"github.com/xapsproxy/xapsproxy/store"
	"github.com/xapsproxy/xapsproxy/watch"
)

// readOnlyStore answers reads and fails the write check.
type readOnlyStore struct{ store.Store }

func (readOnlyStore) PingWrite(context.Context) error {
	return errors.New("store: write check: attempt to write a readonly database")
}

// watchers returns Stats with n watchers in each given state.
func watchers(source string, counts map[watch.State]int) watch.Stats {
	s := watch.Stats{Source: source}
	for st, n := range counts {
		s.Watchers[st] = n
	}
	return s
}

// /readyz is 200 "ready" only when every condition holds; otherwise 503
// with one line for each that does not, and only those.
func TestReadiness(t *testing.T) {
	now := time.Now()
	future := func() time.Time { return now.Add(30 * 24 * time.Hour) }
	past := func() time.Time { return now.Add(-time.Hour) }
	healthy := watchers(watch.SourceNotify, map[watch.State]int{watch.StateWatching: 10})
	for _, tc := range []struct {
		name string
		edit func(*Options)
		want []string // substrings, one per line; none = ready
	}{
		{"all well", func(*Options) {}, nil},
		{"listeners down", func(o *Options) { o.Serving = func() error { return errors.New("shutting down") } },
			[]string{"listeners: shutting down"}},
		{"store not writable", func(o *Options) { o.Store = readOnlyStore{o.Store} },
			[]string{"store: not writable: store: write check: attempt to write a readonly database"}},
		{"apns certificate expired", func(o *Options) { o.Certificates[0].NotAfter = past },
			[]string{"certificate apns: expired on "}},
		{"token key: no certificate", func(o *Options) { o.Certificates[0].NotAfter = func() time.Time { return time.Time{} } }, nil},
		{"credential refused", func(o *Options) { o.Pushes = fixedPushStats{Held: "credential"} },
			[]string{"apns: APNs refuses the credential (403)"}},
		{"apns outage is not the proxy's", func(o *Options) { o.Pushes = fixedPushStats{Held: "outage"} }, nil},
		{"master login refused", func(o *Options) {
			s := watchers(watch.SourceNotify, map[watch.State]int{watch.StateBackoff: 10})
			s.Refused = 10
			o.Watchers = fixedStats(s)
		}, []string{"watchers: 10 of 10 failing (in backoff or waiting for the backend); the backend refused the login of 10: check watch.master_user and watch.master_password"}},
		{"backend unreachable", func(o *Options) {
			s := watchers(watch.SourceIdle, map[watch.State]int{watch.StateUnreachable: 3, watch.StateWatching: 2})
			s.BackendUnreachable = true
			o.Watchers = fixedStats(s)
		}, []string{"watchers: 3 of 5 failing (in backoff or waiting for the backend); the backend does not answer"}},
		{"half failing", func(o *Options) {
			o.Watchers = fixedStats(watchers(watch.SourceNotify, map[watch.State]int{watch.StateBackoff: 2, watch.StateUnreachable: 2, watch.StateWatching: 4}))
		}, []string{"watchers: 4 of 8 failing"}},
		{"a few failing", func(o *Options) {
			o.Watchers = fixedStats(watchers(watch.SourceNotify, map[watch.State]int{watch.StateBackoff: 3, watch.StateWatching: 4}))
		}, nil},
		{"one of one failing", func(o *Options) {
			o.Watchers = fixedStats(watchers(watch.SourceIdle, map[watch.State]int{watch.StateBackoff: 1}))
		}, []string{"watchers: 1 of 1 failing"}},
		{"no watchers", func(o *Options) { o.Watchers = fixedStats(watchers(watch.SourceEvents, nil)) }, nil},
		{"catch-up failing", func(o *Options) {
			s := watchers(watch.SourceEvents, nil)
			s.CatchUpFailingInRow = maxCatchUpFailingInRow
			o.Watchers = fixedStats(s)
		}, []string{"catch-up: its last 3 looks at accounts failed"}},
		{"catch-up: one account failing", func(o *Options) {
			s := watchers(watch.SourceEvents, nil)
			s.CatchUpFailingInRow = 1
			o.Watchers = fixedStats(s)
		}, nil},
		{"everything at once", func(o *Options) {
			o.Serving = func() error { return errors.New("starting") }
			o.Store = readOnlyStore{o.Store}
			o.Certificates[1].NotAfter = past
			o.Pushes = fixedPushStats{Held: "credential"}
			o.Watchers = fixedStats(watchers(watch.SourceIdle, map[watch.State]int{watch.StateBackoff: 1}))
		}, []string{"listeners: starting", "store: not writable", "certificate proxy: expired", "apns: APNs refuses", "watchers: 1 of 1 failing"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := Options{
				Store:        openStore(t),
				Watchers:     fixedStats(healthy),
				Pushes:       fixedPushStats(push.Stats{}),
				Certificates: []Certificate{{Name: "apns", NotAfter: future}, {Name: "proxy", NotAfter: future}},
				Serving:      func() error { return nil },
			}
			tc.edit(&o)
			code, body := get(t, o, "/readyz")
			if len(tc.want) == 0 {
				if code != http.StatusOK || body != "ready\n" {
					t.Fatalf("/readyz = %d %q; want 200 ready", code, body)
				}
				return
			}
			lines := strings.Split(strings.TrimSuffix(body, "\n"), "\n")
			if code != http.StatusServiceUnavailable || len(lines) != len(tc.want) {
				t.Fatalf("/readyz = %d %q; want 503 with %d lines", code, body, len(tc.want))
			}
			for i, w := range tc.want {
				if !strings.Contains(lines[i], w) {
					t.Errorf("/readyz line %d = %q; want it to say %q", i+1, lines[i], w)
				}
			}
		})
	}
}

// /healthz does not depend on what /readyz checks: a process with failing
// watchers and its listeners down is alive.
func TestHealthzIgnoresReadiness(t *testing.T) {
	o := Options{
		Watchers: fixedStats(watchers(watch.SourceIdle, map[watch.State]int{watch.StateBackoff: 1})),
		Serving:  func() error { return errors.New("shutting down") },
	}
	if code, body := get(t, o, "/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz = %d %q; want 200 ok", code, body)
	}
}

// countingStore counts the write checks; each blocks until release is
// closed, as a write check waiting behind the store's writes does.
type countingStore struct {
	store.Store
	checks  atomic.Int32
	release chan struct{}
}

func (s *countingStore) PingWrite(ctx context.Context) error {
	s.checks.Add(1)
	select {
	case <-s.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// /readyz needs no token, and its write check takes the store's one writer
// connection: requests at once share one check, and a check's answer is
// reused for readyWriteEvery, so that anyone who reaches the listener
// cannot queue write checks ahead of the store's own writes.
func TestReadinessSharesTheWriteCheck(t *testing.T) {
	st := &countingStore{Store: openStore(t), release: make(chan struct{})}
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	h := readiness(Options{Store: st}, clock)
	const n = 20
	codes := make(chan int, n)
	for range n {
		go func() {
			w := httptest.NewRecorder()
			h(w, httptest.NewRequest("GET", "/readyz", nil))
			codes <- w.Code
		}()
	}
	deadline := time.Now().Add(5 * time.Second)
	for st.checks.Load() == 0 && time.Now().Before(deadline) {
		runtime.Gosched()
	}
	close(st.release)
	for range n {
		if code := <-codes; code != http.StatusOK {
			t.Errorf("/readyz = %d, want 200", code)
		}
	}
	if got := st.checks.Load(); got != 1 {
		t.Errorf("%d requests at once made %d write checks, want 1", n, got)
	}
	w := httptest.NewRecorder()
	h(w, httptest.NewRequest("GET", "/readyz", nil))
	if got := st.checks.Load(); got != 1 || w.Code != http.StatusOK {
		t.Errorf("a request right after: %d, %d write checks; want 200 and the answer reused", w.Code, got)
	}
	mu.Lock()
	now = now.Add(readyWriteEvery)
	mu.Unlock()
	h(httptest.NewRecorder(), httptest.NewRequest("GET", "/readyz", nil))
	if got := st.checks.Load(); got != 2 {
		t.Errorf("after readyWriteEvery: %d write checks, want 2", got)
	}
}
