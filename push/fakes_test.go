package push_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xapsproxy/xapsproxy/config"
	"github.com/xapsproxy/xapsproxy/internal/apnstest"
	"github.com/xapsproxy/xapsproxy/internal/testpki"
	"github.com/xapsproxy/xapsproxy/push"
	"github.com/xapsproxy/xapsproxy/store"
)

const testTopic = "com.apple.mail.XServer.3a1c2f4e-6b7d-4e8f-9a0b-1c2d3e4f5a6b"

// token returns a distinct valid device token for i.
func token(i int) string { return strings.Repeat(fmt.Sprintf("%02x", i), 32) }

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// waitFor polls cond until it holds, failing the test after timeout.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline.C:
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
	}
}

// memStore is an in-memory store.Store.
type memStore struct {
	mu      sync.Mutex
	regs    map[[2]string]store.Registration // by (user, token)
	records []pushRecord
	failReg int // fail this many Registrations calls
	outbox  []store.OutboxEntry
	lastID  int64
}

type pushRecord struct{ user, token, result string }

func newMemStore(regs ...store.Registration) *memStore {
	s := &memStore{regs: map[[2]string]store.Registration{}}
	for _, r := range regs {
		_ = s.Register(context.Background(), r)
	}
	return s
}

func (s *memStore) Ping(context.Context) error      { return nil }
func (s *memStore) PingWrite(context.Context) error { return nil }

func (s *memStore) Counts(context.Context) (store.Counts, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	users := map[string]bool{}
	for k := range s.regs {
		users[k[0]] = true
	}
	return store.Counts{Registrations: len(s.regs), Users: len(users), Outbox: len(s.outbox)}, nil
}

func (s *memStore) Register(_ context.Context, r store.Registration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.regs[[2]string{r.User, r.DeviceToken}] = r
	return nil
}

func (s *memStore) Registrations(_ context.Context, user string) ([]store.Registration, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failReg > 0 {
		s.failReg--
		return nil, errors.New("database is locked")
	}
	var out []store.Registration
	for _, r := range s.regs {
		if r.User == user {
			out = append(out, r)
		}
	}
	slices.SortFunc(out, func(a, b store.Registration) int { return strings.Compare(a.DeviceToken, b.DeviceToken) })
	return out, nil
}

func (s *memStore) All(context.Context) ([]store.Registration, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []store.Registration
	for _, r := range s.regs {
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b store.Registration) int {
		return strings.Compare(a.User+"\x00"+a.DeviceToken, b.User+"\x00"+b.DeviceToken)
	})
	return out, nil
}

func (s *memStore) Users(ctx context.Context) ([]string, error) {
	all, _ := s.All(ctx)
	var users []string
	for _, r := range all {
		users = append(users, r.User)
	}
	return slices.Compact(users), nil
}

func (s *memStore) Delete(_ context.Context, user, token string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := [2]string{user, token}
	_, ok := s.regs[k]
	delete(s.regs, k)
	return ok, nil
}

func (s *memStore) DeleteToken(_ context.Context, token string) ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var users []string
	for k := range s.regs {
		if k[1] == token {
			users = append(users, k[0])
			delete(s.regs, k)
		}
	}
	slices.Sort(users)
	return users, nil
}

func (s *memStore) RecordPush(_ context.Context, user, token string, at time.Time, result string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.records = append(s.records, pushRecord{user, token, result})
	k := [2]string{user, token}
	r, ok := s.regs[k]
	if !ok {
		return store.ErrNotFound
	}
	r.LastPush, r.LastPushResult = at, result
	s.regs[k] = r
	return nil
}

func (s *memStore) MailboxState(context.Context, string, string) (store.MailboxState, error) {
	return store.MailboxState{}, store.ErrNotFound
}

func (s *memStore) SetMailboxState(context.Context, string, string, store.MailboxState) error {
	return nil
}

func (s *memStore) RegistrationsOf(ctx context.Context, users []string) (map[string][]store.Registration, error) {
	out := map[string][]store.Registration{}
	for _, u := range users {
		regs, err := s.Registrations(ctx, u)
		if err != nil {
			return nil, err
		}
		if len(regs) > 0 {
			out[u] = regs
		}
	}
	return out, nil
}

func (s *memStore) FinishPushes(ctx context.Context, records []store.PushRecord, done []store.OutboxEntry) error {
	for _, r := range records {
		_ = s.RecordPush(ctx, r.User, r.DeviceToken, r.At, r.Result)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.outbox = slices.DeleteFunc(s.outbox, func(e store.OutboxEntry) bool {
		return slices.ContainsFunc(done, func(d store.OutboxEntry) bool { return d.ID == e.ID })
	})
	return nil
}

func (s *memStore) CommitMailbox(_ context.Context, user, mailbox string, _ *store.MailboxState, e *store.OutboxEntry) (int64, error) {
	if e == nil {
		return 0, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.outbox = slices.DeleteFunc(s.outbox, func(o store.OutboxEntry) bool {
		return o.User == user && o.Mailbox == mailbox && o.Changed == e.Changed
	})
	s.lastID++
	s.outbox = append(s.outbox, store.OutboxEntry{ID: s.lastID, User: user, Mailbox: mailbox, Changed: e.Changed, At: e.At})
	return s.lastID, nil
}

func (s *memStore) Outbox(context.Context) ([]store.OutboxEntry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.outbox), nil
}

func (s *memStore) OutboxOf(ctx context.Context, user string) ([]store.OutboxEntry, error) {
	all, _ := s.Outbox(ctx)
	var out []store.OutboxEntry
	for _, e := range all {
		if e.User == user {
			out = append(out, e)
		}
	}
	return out, nil
}

func (s *memStore) SetCredential(context.Context, string, []byte) error { return nil }

func (s *memStore) Credential(context.Context, string) ([]byte, error) { return nil, store.ErrNotFound }

func (s *memStore) DeleteCredential(context.Context, string, []byte) (bool, error) { return false, nil }

func (s *memStore) Close() error { return nil }

func (s *memStore) has(user, token string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.regs[[2]string{user, token}]
	return ok
}

// results returns the recorded outcomes for token, oldest first.
func (s *memStore) results(token string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, r := range s.records {
		if r.token == token {
			out = append(out, r.result)
		}
	}
	return out
}

// funcSender is a Sender for scheduling tests that need no network: it
// records every notification and answers with fn (nil = 200).
type funcSender struct {
	fn func(ctx context.Context, n push.Notification) (push.Response, error)

	mu    sync.Mutex
	calls []push.Notification
}

func (s *funcSender) Send(ctx context.Context, n push.Notification) (push.Response, error) {
	s.mu.Lock()
	s.calls = append(s.calls, n)
	s.mu.Unlock()
	if s.fn == nil {
		return push.Response{StatusCode: 200}, nil
	}
	return s.fn(ctx, n)
}

func (s *funcSender) sent() []push.Notification {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]push.Notification(nil), s.calls...)
}

// apnsEnv is a fake APNs with a matching client certificate, CA file and
// config, ready for LoadCredentials and NewAPNs.
type apnsEnv struct {
	ca     *testpki.CA
	fake   *apnstest.Server
	cert   tls.Certificate
	cfg    config.APNS
	creds  *push.Credentials
	sender *push.APNs
}

func newAPNsEnv(t *testing.T) *apnsEnv {
	t.Helper()
	e := newAPNsEnvTB(t)
	var err error
	if e.sender, err = push.NewAPNs(e.creds, e.cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.sender.Close)
	return e
}

// startRun runs p until the test ends, then checks that Run returns.
func startRun(t *testing.T, p *push.Pusher) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-errc:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("Run did not return 5s after cancel")
		}
	})
}

// waitIdle waits until p has nothing pending.
func waitIdle(t *testing.T, p *push.Pusher) {
	t.Helper()
	waitFor(t, 5*time.Second, "the pusher to be idle", func() bool { return p.Pending() == 0 })
}

// prunes collects OnPrune calls.
type prunes struct {
	mu    sync.Mutex
	users []string
}

func (p *prunes) add(user string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.users = append(p.users, user)
}

func (p *prunes) get() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := append([]string(nil), p.users...)
	slices.Sort(out)
	return out
}

// fakeClock is a push.Clock whose time moves only by Advance. A timer fires
// (a send on its 1-buffered channel, as time.Timer's) when Advance reaches
// its deadline.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

type fakeTimer struct {
	clock *fakeClock
	ch    chan time.Time
	at    time.Time // zero = stopped or fired
}

// newFakeClock starts at the real time, so that apns-expiration, which the
// fake APNs checks against the real clock, stays plausible while tests
// advance it by a minute or less.
func newFakeClock() *fakeClock { return &fakeClock{now: time.Now()} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) NewTimer() push.Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{clock: c, ch: make(chan time.Time, 1)}
	c.timers = append(c.timers, t)
	return t
}

func (t *fakeTimer) C() <-chan time.Time { return t.ch }

func (t *fakeTimer) Reset(at time.Time) {
	t.clock.mu.Lock()
	defer t.clock.mu.Unlock()
	t.drain()
	t.at = at
	t.clock.fire()
}

func (t *fakeTimer) Stop() {
	t.clock.mu.Lock()
	defer t.clock.mu.Unlock()
	t.drain()
	t.at = time.Time{}
}

func (t *fakeTimer) drain() {
	select {
	case <-t.ch:
	default:
	}
}

// Advance moves the time on by d and fires the timers it reaches.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	c.fire()
}

// fire sends on every armed timer whose deadline has come. c.mu is held.
func (c *fakeClock) fire() {
	for _, t := range c.timers {
		if !t.at.IsZero() && !t.at.After(c.now) {
			select {
			case t.ch <- c.now:
			default:
			}
			t.at = time.Time{}
		}
	}
}

// armed returns the deadlines of the timers waiting to fire.
func (c *fakeClock) armed() []time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []time.Time
	for _, t := range c.timers {
		if !t.at.IsZero() {
			out = append(out, t.at)
		}
	}
	return out
}

// waitArmed waits until the clock's only armed timer is set for at, the
// moment a test expects Run to wait for (a job's due time is absolute, so
// this is Run having taken in the event that made it due then).
func (c *fakeClock) waitArmed(t *testing.T, at time.Time) {
	t.Helper()
	waitFor(t, 5*time.Second, "the pusher to wait for "+at.Sub(c.Now()).String()+" from now", func() bool {
		a := c.armed()
		return len(a) == 1 && a[0].Equal(at)
	})
}
