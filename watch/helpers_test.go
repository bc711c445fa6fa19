package watch_test

// Shared fixtures for the watch tests: a recording Notifier, a real Dovecot
// with a store and a Manager around it, and small helpers that look at
// Dovecot directly (doveadm, IMAP APPEND) rather than through the package
// under test.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/xapsproxy/xapsproxy/config"
	"github.com/xapsproxy/xapsproxy/event"
	"github.com/xapsproxy/xapsproxy/internal/dovecottest"
	"github.com/xapsproxy/xapsproxy/internal/testlog"
	"github.com/xapsproxy/xapsproxy/store"
	"github.com/xapsproxy/xapsproxy/watch"
)

const (
	// waitTimeout bounds every wait for something that should happen.
	waitTimeout = 10 * time.Second
	// quietWindow is how long a test watches for something that must not
	// happen: twice Dovecot's IDLE notification delay (0.5 s) and a check.
	quietWindow = time.Second
	pollEvery   = 10 * time.Millisecond
)

// recorder is a Notifier that remembers every event.
// recorder is the Notifier of the tests. Every event must come with an
// outbox id of its own (the owner committed it to the store's outbox, and
// ids are never reused); it keeps the events without their ids, so tests compare what
// happened, and wait reports ids that are not.
type recorder struct {
	mu     sync.Mutex
	events []event.Event
	ids    map[int64]bool
	badIDs []event.Event
}

func (r *recorder) Notify(e event.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e.ID <= 0 || r.ids[e.ID] {
		r.badIDs = append(r.badIDs, e)
	}
	if r.ids == nil {
		r.ids = map[int64]bool{}
	}
	r.ids[e.ID] = true
	e.ID = 0
	r.events = append(r.events, e)
}

func (r *recorder) snapshot() []event.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events)
}

// wait waits until at least n events have been reported and returns all of
// them.
func (r *recorder) wait(t *testing.T, n int) []event.Event {
	t.Helper()
	eventually(t, fmt.Sprintf("%d event(s)", n), func() bool { return len(r.snapshot()) >= n })
	r.mu.Lock()
	if len(r.badIDs) > 0 {
		t.Errorf("events without a new outbox id: %v", r.badIDs)
	}
	r.mu.Unlock()
	return r.snapshot()
}

// quiet fails the test if any event beyond the first n is reported within
// quietWindow.
func (r *recorder) quiet(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(quietWindow)
	for time.Now().Before(deadline) {
		if ev := r.snapshot(); len(ev) > n {
			t.Fatalf("unexpected events: got %v, want only %d", ev, n)
		}
		time.Sleep(pollEvery)
	}
}

// eventually polls cond until it holds, failing the test after waitTimeout.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", waitTimeout, what)
		}
		time.Sleep(pollEvery)
	}
}

func newEvent(user, mailbox string) event.Event {
	return event.Event{User: user, Mailbox: mailbox, Kind: event.KindNew}
}

// wantEvents fails the test unless got equals want exactly.
func wantEvents(t *testing.T, got []event.Event, want ...event.Event) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Fatalf("events = %v, want %v", got, want)
	}
}

// env is a running Dovecot, a store and a manager (not yet running).
type env struct {
	t   *testing.T
	d   *dovecottest.Dovecot
	st  store.Store
	rec *recorder
	log *slog.Logger
	m   *watch.Manager

	cancel context.CancelFunc
	done   chan error
}

// newEnv starts Dovecot and builds a manager around it; edit may adjust the
// options (defaults: backoff 50 ms to 500 ms, default poll interval).
//
// Dovecot runs without IDLE hibernation: Dovecot 2.3.19 loses the IDLE
// notification of mail that arrives while the notification is held back
// (0.5 s) and the connection hibernates in the meantime, i.e. between
// imap_hibernate_timeout-0.5s and imap_hibernate_timeout after IDLE began;
// the watcher would only see it at its next poll. Tests cannot tell when the
// watcher's IDLE began, so they use newHibernatingEnv only together with
// waitHibernated.
func newEnv(t *testing.T, edit func(*watch.Options)) *env {
	t.Helper()
	return startEnv(t, dovecottest.Options{}, edit)
}

// newHibernatingEnv is newEnv with Dovecot hibernating IDLE connections
// after 1 s, as the README recommends for production.
func newHibernatingEnv(t *testing.T, edit func(*watch.Options)) *env {
	t.Helper()
	return startEnv(t, dovecottest.Options{Hibernate: true}, edit)
}

func startEnv(t *testing.T, dopts dovecottest.Options, edit func(*watch.Options)) *env {
	t.Helper()
	logger := testlog.New(t, "masterpw") // first: its check runs after every other cleanup
	d := dovecottest.Start(t, dopts)
	if d.MasterPassword != "masterpw" {
		t.Fatalf("dovecottest master password is %q; the secret checks assume masterpw", d.MasterPassword)
	}
	e := &env{t: t, d: d, st: openStore(t), rec: &recorder{}, log: logger}
	opts := e.options()
	if edit != nil {
		edit(&opts)
	}
	e.m = watch.New(opts)
	return e
}

// options are the manager options for this env's Dovecot, store and recorder.
func (e *env) options() watch.Options {
	return watch.Options{
		Store:      e.st,
		Notifier:   e.rec,
		Backend:    config.Backend{Address: e.d.IMAPAddr, TLS: config.BackendTLSNone},
		Watch:      masterLogin(e.d.MasterUser, e.d.MasterPassword),
		Source:     watch.SourceIdle, // notify_test.go runs the NOTIFY source
		MinBackoff: 50 * time.Millisecond,
		MaxBackoff: 500 * time.Millisecond,
		Logger:     e.log,
	}
}

func masterLogin(user, password string) config.Watch {
	return config.Watch{
		Auth:            config.AuthMaster,
		MasterUser:      user,
		MasterPassword:  password,
		MasterSeparator: config.DefaultMasterSeparator,
		Source:          config.SourceAuto,
	}
}

func openStore(t *testing.T) store.Store {
	t.Helper()
	st, err := store.Open(context.Background(), filepath.Join(t.TempDir(), "xapsproxy.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// run starts Manager.Run; the test's cleanup cancels it and fails the test if
// it does not return promptly.
func (e *env) run() {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel, e.done = cancel, make(chan error, 1)
	go func() { e.done <- e.m.Run(ctx) }()
	e.t.Cleanup(func() { e.stop() })
}

// stop cancels Run and waits for it to return (at most 5 s).
func (e *env) stop() {
	e.t.Helper()
	if e.cancel == nil {
		return
	}
	e.cancel()
	e.cancel = nil
	select {
	case err := <-e.done:
		if err != nil {
			e.t.Errorf("Run returned %v", err)
		}
	case <-time.After(5 * time.Second):
		e.t.Errorf("Run did not return within 5s of its context being cancelled")
	}
}

// token makes a distinct, valid device token.
func token(n int) string { return fmt.Sprintf("%064x", n) }

func (e *env) register(user string, tok int, mailboxes ...string) {
	e.t.Helper()
	if err := e.st.Register(context.Background(), registration(user, tok, mailboxes...)); err != nil {
		e.t.Fatal(err)
	}
}

// state returns the stored state of a mailbox and whether there is one.
func (e *env) state(user, mailbox string) (store.MailboxState, bool) {
	e.t.Helper()
	st, err := e.st.MailboxState(context.Background(), user, mailbox)
	if errors.Is(err, store.ErrNotFound) {
		return st, false
	}
	if err != nil {
		e.t.Fatal(err)
	}
	return st, true
}

func (e *env) setState(user, mailbox string, st store.MailboxState) {
	e.t.Helper()
	if err := e.st.SetMailboxState(context.Background(), user, mailbox, st); err != nil {
		e.t.Fatal(err)
	}
}

// waitState waits until the stored state of the mailbox equals want.
func (e *env) waitState(user, mailbox string, want store.MailboxState) {
	e.t.Helper()
	eventually(e.t, fmt.Sprintf("stored state of %s/%s to be %+v", user, mailbox, want), func() bool {
		st, ok := e.state(user, mailbox)
		return ok && st == want
	})
}

// waitBaseline waits until the watcher has stored the mailbox's state and
// checks that it is what Dovecot says.
func (e *env) waitBaseline(user, mailbox string) store.MailboxState {
	e.t.Helper()
	eventually(e.t, fmt.Sprintf("a stored state for %s/%s", user, mailbox), func() bool {
		_, ok := e.state(user, mailbox)
		return ok
	})
	got, _ := e.state(user, mailbox)
	if want := e.status(user, mailbox); got != want {
		e.t.Fatalf("stored state of %s/%s = %+v, Dovecot says %+v", user, mailbox, got, want)
	}
	return got
}

// deliver delivers one message to user's INBOX over LMTP.
func (e *env) deliver(user string) {
	e.t.Helper()
	e.d.Deliver(e.t, user+"@example.com", []byte("From: sender@example.com\r\nTo: "+user+
		"@example.com\r\nSubject: hello\r\n\r\nnew mail\r\n"))
}

// appendTo appends one message to a mailbox, logged in as the user himself.
func (e *env) appendTo(user, mailbox string) {
	e.t.Helper()
	c, err := imapclient.DialInsecure(e.d.IMAPAddr, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	defer c.Close()
	if err := c.Login(user, e.d.Password(user)).Wait(); err != nil {
		e.t.Fatal(err)
	}
	msg := []byte("From: sender@example.com\r\nSubject: note\r\n\r\na note\r\n")
	w := c.Append(mailbox, int64(len(msg)), nil)
	if _, err := w.Write(msg); err != nil {
		e.t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		e.t.Fatal(err)
	}
	if _, err := w.Wait(); err != nil {
		e.t.Fatalf("APPEND to %s: %v", mailbox, err)
	}
	c.Logout().Wait()
}

func (e *env) createMailbox(user, mailbox string) {
	e.t.Helper()
	e.d.Doveadm(e.t, "mailbox", "create", "-u", user, mailbox)
}

// status is the mailbox's UIDVALIDITY and UIDNEXT as Dovecot reports them.
func (e *env) status(user, mailbox string) store.MailboxState {
	e.t.Helper()
	out := e.d.Doveadm(e.t, "mailbox", "status", "-u", user, "uidvalidity uidnext", mailbox)
	var st store.MailboxState
	for _, f := range strings.Fields(out) {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			continue
		}
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			e.t.Fatalf("doveadm mailbox status: %q: %v", out, err)
		}
		switch k {
		case "uidvalidity":
			st.UIDValidity = uint32(n)
		case "uidnext":
			st.UIDNext = uint32(n)
		}
	}
	if st.UIDValidity == 0 || st.UIDNext == 0 {
		e.t.Fatalf("doveadm mailbox status: unexpected output %q", out)
	}
	return st
}

// sessions is the number of IMAP sessions Dovecot has for user (hibernated
// IDLE sessions included), from `doveadm who`.
func (e *env) sessions(user string) int {
	e.t.Helper()
	return len(e.sessionPIDs(user))
}

// sessionPIDs are the processes that hold user's IMAP sessions: imap, or
// imap-hibernate for a hibernated IDLE.
func (e *env) sessionPIDs(user string) []string {
	e.t.Helper()
	out := e.d.Doveadm(e.t, "who", "-1") // username proto pid ip
	var pids []string
	for line := range strings.Lines(out) {
		if f := strings.Fields(line); len(f) >= 3 && f[0] == user {
			pids = append(pids, f[2])
		}
	}
	return pids
}

// waitHibernated waits until user's only session is held by imap-hibernate.
func (e *env) waitHibernated(user string) {
	e.t.Helper()
	eventually(e.t, user+"'s session to hibernate", func() bool {
		pids := e.sessionPIDs(user)
		if len(pids) != 1 {
			return false
		}
		comm, err := os.ReadFile("/proc/" + pids[0] + "/comm")
		return err == nil && strings.TrimSpace(string(comm)) == "imap-hibernate"
	})
}

func (e *env) waitSessions(user string, want int) {
	e.t.Helper()
	eventually(e.t, fmt.Sprintf("%d Dovecot session(s) of %s", want, user), func() bool {
		return e.sessions(user) == want
	})
}

// silentBackend accepts TCP connections and never sends a greeting, like an
// IMAP server whose login processes are all busy (the kernel still accepts
// into the listen backlog). It notes when each connection was accepted and
// when the client closed it.
type silentBackend struct {
	l net.Listener

	mu    sync.Mutex
	conns []*silentConn
}

type silentConn struct {
	c                net.Conn
	accepted, closed time.Time // closed: zero while the client keeps it open
}

func startSilentBackend(t *testing.T) *silentBackend {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &silentBackend{l: l}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			sc := &silentConn{c: c, accepted: time.Now()}
			b.mu.Lock()
			b.conns = append(b.conns, sc)
			b.mu.Unlock()
			go func() {
				io.Copy(io.Discard, c) // until the client closes
				b.mu.Lock()
				sc.closed = time.Now()
				b.mu.Unlock()
			}()
		}
	}()
	t.Cleanup(b.close)
	return b
}

func (b *silentBackend) addr() string { return b.l.Addr().String() }

func (b *silentBackend) accepted() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.conns)
}

// held returns how long the client kept connection i open, and whether it
// has closed it.
func (b *silentBackend) held(i int) (time.Duration, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if i >= len(b.conns) || b.conns[i].closed.IsZero() {
		return 0, false
	}
	return b.conns[i].closed.Sub(b.conns[i].accepted), true
}

// close closes the listener and every accepted connection.
func (b *silentBackend) close() {
	b.l.Close()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range b.conns {
		c.c.Close()
	}
}

// logCapture is a slog handler that keeps every formatted line (for
// assertions on what was logged) and also passes records on to next.
type logCapture struct {
	slog.Handler // formats into buf
	next         slog.Handler
	buf          *lockedBuilder
}

type lockedBuilder struct {
	mu sync.Mutex
	sb strings.Builder
}

func (b *lockedBuilder) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.sb.Write(p)
}

func (b *lockedBuilder) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.sb.String()
}

func newLogCapture(next *slog.Logger) (*slog.Logger, *lockedBuilder) {
	buf := &lockedBuilder{}
	h := &logCapture{
		Handler: slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}),
		next:    next.Handler(),
		buf:     buf,
	}
	return slog.New(h), buf
}

func (h *logCapture) Enabled(context.Context, slog.Level) bool { return true }

func (h *logCapture) Handle(ctx context.Context, r slog.Record) error {
	if err := h.Handler.Handle(ctx, r.Clone()); err != nil {
		return err
	}
	return h.next.Handle(ctx, r)
}

func (h *logCapture) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &logCapture{Handler: h.Handler.WithAttrs(attrs), next: h.next.WithAttrs(attrs), buf: h.buf}
}

func (h *logCapture) WithGroup(name string) slog.Handler {
	return &logCapture{Handler: h.Handler.WithGroup(name), next: h.next.WithGroup(name), buf: h.buf}
}

// waitStats polls m.Stats until cond holds, failing the test after
// waitTimeout with the last statistics seen; it returns the ones that held.
func waitStats(t *testing.T, m *watch.Manager, what string, cond func(watch.Stats) bool) watch.Stats {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		s := m.Stats()
		if cond(s) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s; last stats %+v", waitTimeout, what, s)
		}
		time.Sleep(pollEvery)
	}
}
