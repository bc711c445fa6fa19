package watch_test

// Backend outages, shutdown, and what gets logged.

import (
	"context"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/xapsproxy/xapsproxy/config"
	"github.com/xapsproxy/xapsproxy/internal/testlog"
	"github.com/xapsproxy/xapsproxy/store"
	"github.com/xapsproxy/xapsproxy/watch"
)

// After Dovecot goes away and comes back, the watcher reconnects by itself
// and reports new mail again.
func TestReconnectsAfterBackendOutage(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	e.register("alice", 1, "INBOX")
	e.run()
	base := e.waitBaseline("alice", "INBOX")
	e.waitSessions("alice", 1)

	e.d.Stop(t)
	e.d.Restart(t)
	e.waitSessions("alice", 1) // the watcher is back
	e.deliver("alice")
	wantEvents(t, e.rec.wait(t, 1), newEvent("alice", "INBOX"))
	e.waitState("alice", "INBOX", store.MailboxState{UIDValidity: base.UIDValidity, UIDNext: base.UIDNext + 1})
	wantEvents(t, e.rec.snapshot(), newEvent("alice", "INBOX"))
}

// Mail delivered as soon as Dovecot is back, usually before the watcher has
// reconnected (the prober's first attempt comes 100-200 ms after the watcher
// found Dovecot gone), is reported exactly once: by the catch-up or by IDLE,
// never by both.
func TestMailRightAfterRestartReportedOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	e.register("alice", 1, "INBOX")
	e.run()
	base := e.waitBaseline("alice", "INBOX")
	e.waitSessions("alice", 1)

	e.d.Stop(t)
	e.d.Restart(t)
	e.deliver("alice")
	wantEvents(t, e.rec.wait(t, 1), newEvent("alice", "INBOX"))
	e.waitState("alice", "INBOX", store.MailboxState{UIDValidity: base.UIDValidity, UIDNext: base.UIDNext + 1})

	// Another delivery is a barrier: a duplicate for the first message would
	// come before its event.
	e.deliver("alice")
	e.rec.wait(t, 2)
	e.waitState("alice", "INBOX", store.MailboxState{UIDValidity: base.UIDValidity, UIDNext: base.UIDNext + 2})
	wantEvents(t, e.rec.snapshot(), newEvent("alice", "INBOX"), newEvent("alice", "INBOX"))
}

// A backend that is down when the manager starts is probed until it is
// up, the watcher waiting meanwhile; nothing is lost.
func TestBackendDownAtStart(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	cur := e.status("alice", "INBOX")
	e.setState("alice", "INBOX", cur)
	e.register("alice", 1, "INBOX")
	e.d.Stop(t)
	e.run()
	waitStats(t, e.m, "three probes of the stopped backend", func(s watch.Stats) bool {
		return s.BackendUnreachable && s.Probes >= 3 && s.Watchers[watch.StateUnreachable] == 1
	})
	e.d.Restart(t)
	e.deliver("alice")
	wantEvents(t, e.rec.wait(t, 1), newEvent("alice", "INBOX"))
	e.waitState("alice", "INBOX", store.MailboxState{UIDValidity: cur.UIDValidity, UIDNext: cur.UIDNext + 1})
}

// Run returns promptly when its context is cancelled, closes every backend
// session and leaves no goroutine behind. Not parallel: it counts the
// process's goroutines.
func TestRunStopsPromptlyWithoutLeaks(t *testing.T) {
	e := newEnv(t, func(o *watch.Options) { o.PollInterval = 100 * time.Millisecond })
	e.createMailbox("bob", "Notes")
	e.register("alice", 1, "INBOX")
	e.register("bob", 2, "INBOX", "Notes")
	before := runtime.NumGoroutine()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- e.m.Run(ctx) }()
	e.waitBaseline("alice", "INBOX")
	e.waitBaseline("bob", "Notes")
	e.deliver("alice")
	e.rec.wait(t, 1)
	e.waitSessions("alice", 1)
	e.waitSessions("bob", 1)

	start := time.Now()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run returned %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return within 5s of its context being cancelled")
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("Run took %v to return after cancel, want well under a second", took)
	}
	eventually(t, "the goroutine count to drop back", func() bool { return runtime.NumGoroutine() <= before })
	e.waitSessions("alice", 0)
	e.waitSessions("bob", 0)
}

// A login the backend refuses is not a reachability problem: the gate stays
// open, and the watcher waits its longest backoff (here an hour, with the
// shortest 10 ms) instead of retrying soon. Cancelling Run meanwhile does
// not wait for the backoff.
func TestRefusedLoginWaitsLongestBackoff(t *testing.T) {
	t.Parallel()
	b := startFakeBackend(t, 0, false) // no users: every login is refused
	var logs *lockedBuilder
	e := newFakeEnv(t, b, 0, func(o *watch.Options) {
		o.MinBackoff, o.MaxBackoff = 10*time.Millisecond, time.Hour
		o.Logger, logs = newLogCapture(o.Logger)
	})
	e.register("alice", 1, "INBOX")
	e.run()
	s := waitStats(t, e.m, "the watcher to back off", func(s watch.Stats) bool { return s.Watchers[watch.StateBackoff] == 1 })
	if s.BackendUnreachable || s.Probes != 0 {
		t.Errorf("a refused login closed the gate: %+v", s)
	}
	if s.Refused != 1 || s.LoginsRefused != 1 || s.LoginsFailed != 0 {
		t.Errorf("stats after one refused login: Refused %d, LoginsRefused %d, LoginsFailed %d; want 1, 1, 0", s.Refused, s.LoginsRefused, s.LoginsFailed)
	}
	m := regexp.MustCompile(`msg="backend refused the login, retrying later".* delay=(\S+)`).FindStringSubmatch(logs.String())
	if m == nil {
		t.Fatalf("no refused login logged:\n%s", logs)
	}
	if d, err := time.ParseDuration(m[1]); err != nil || d < 30*time.Minute {
		t.Errorf("after a refused login the watcher waits %s, want at least half of MaxBackoff (1h)", m[1])
	}
	start := time.Now()
	e.stop()
	if took := time.Since(start); took > time.Second {
		t.Errorf("Run took %v to return after cancel, want well under a second", took)
	}
}

// Cancelling Run while the backend is unreachable (the watcher waits at the
// gate, the prober between two attempts) returns promptly.
func TestRunStopsWhileBackendUnreachable(t *testing.T) {
	t.Parallel()
	st := openStore(t)
	m := watch.New(watch.Options{
		Store:    st,
		Notifier: &recorder{},
		Backend:  config.Backend{Address: closedAddr(t)},
		Watch:    masterLogin("master", "masterpw"),
		Logger:   testlog.New(t, "masterpw"),
	})
	e := &env{t: t, st: st, m: m}
	e.register("alice", 1, "INBOX")
	e.run()
	waitStats(t, m, "the watcher to wait for the backend", func(s watch.Stats) bool {
		return s.Watchers[watch.StateUnreachable] == 1 && s.Probes >= 1
	})
	start := time.Now()
	e.stop()
	if took := time.Since(start); took > time.Second {
		t.Errorf("Run took %v to return after cancel, want well under a second", took)
	}
}

// Cancelling Run while a watcher waits for the backend's greeting (the
// backend accepted the connection but is too busy to greet, as Dovecot is
// when all its login processes are taken) returns promptly.
func TestRunStopsWhileBackendDoesNotGreet(t *testing.T) {
	t.Parallel()
	b := startSilentBackend(t)
	st := openStore(t)
	m := watch.New(watch.Options{
		Store:      st,
		Notifier:   &recorder{},
		Backend:    config.Backend{Address: b.addr()},
		Watch:      masterLogin("master", "masterpw"),
		MinBackoff: 50 * time.Millisecond,
		MaxBackoff: 500 * time.Millisecond,
		Logger:     testlog.New(t, "masterpw"),
	})
	if err := st.Register(context.Background(), registration("alice", 1, "INBOX")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	eventually(t, "the watcher to connect", func() bool { return b.accepted() > 0 })

	cancel()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Errorf("Run has not returned 2s after its context was cancelled: the watcher still waits for the greeting")
		b.close() // unblocks it
		<-done
	}
}

// Probe gives up when its context ends, also while it waits for the greeting.
func TestProbeHonoursContextWhileBackendDoesNotGreet(t *testing.T) {
	t.Parallel()
	b := startSilentBackend(t)
	m := watch.New(watch.Options{
		Backend: config.Backend{Address: b.addr()},
		Watch:   masterLogin("master", "masterpw"),
	})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() { _, err := m.Probe(ctx, "alice"); done <- err }()
	select {
	case err := <-done:
		if err == nil {
			t.Error("Probe of a backend that never greets succeeded")
		}
	case <-time.After(2 * time.Second):
		t.Errorf("Probe has not returned 2s after its context (200ms timeout) ended: it still waits for the greeting")
		b.close()
		<-done
	}
}

// The master password never reaches the log, neither in normal operation
// nor in the login failures that are logged.
func TestMasterPasswordNeverLogged(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	logger, logs := newLogCapture(e.log)

	// A working watcher, all the way to an event.
	opts := e.options()
	opts.Logger = logger
	e.m = watch.New(opts)
	e.register("alice", 1, "INBOX")
	e.run()
	e.waitBaseline("alice", "INBOX")
	e.deliver("alice")
	e.rec.wait(t, 1)

	// A watcher whose master password is refused keeps logging its failure.
	bad := e.options()
	bad.Logger = logger
	bad.Store = openStore(t)
	bad.Watch = masterLogin("master", "wrongpw")
	be := &env{t: t, st: bad.Store, m: watch.New(bad)}
	be.register("alice", 1, "INBOX")
	be.run()
	eventually(t, "two failed logins to be logged", func() bool {
		return strings.Count(logs.String(), "log in as alice*master") >= 2
	})
	be.stop()
	e.stop()

	all := logs.String()
	if !strings.Contains(all, "new mail") {
		t.Errorf("the log lacks the new mail line; captured:\n%s", all)
	}
	for _, secret := range []string{"masterpw", "wrongpw"} {
		if strings.Contains(all, secret) {
			t.Errorf("the log contains the password %q:\n%s", secret, all)
		}
	}
}

func registration(user string, tok int, mailboxes ...string) store.Registration {
	now := time.Now()
	return store.Registration{
		User: user, DeviceToken: token(tok), AccountID: "ACCOUNT-" + user,
		Subtopic: "com.apple.mobilemail", Mailboxes: mailboxes, Version: 2,
		Topic: "com.apple.mail.XServer.test", Registered: now, Renewed: now,
	}
}

// Stats counts watchers by state and the connections that replace lost
// ones: both watchers are watching once in IDLE, both wait for the backend
// while Dovecot is down, and both watch again after it is back, each after
// one reconnection at least.
func TestStatsFollowWatchers(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	e.register("alice", 1, "INBOX")
	e.register("bob", 2, "INBOX")
	e.run()
	waitStats(t, e.m, "both watchers watching", func(s watch.Stats) bool {
		return s.Watchers == [watch.NumStates]int{watch.StateWatching: 2} && s.Reconnects == 0
	})

	e.d.Stop(t)
	waitStats(t, e.m, "both watchers waiting for the backend", func(s watch.Stats) bool {
		return s.Watchers == [watch.NumStates]int{watch.StateUnreachable: 2} && s.BackendUnreachable
	})
	e.d.Restart(t)
	waitStats(t, e.m, "both watchers watching again", func(s watch.Stats) bool {
		return s.Watchers[watch.StateWatching] == 2 && s.Reconnects >= 2
	})
	if s := e.m.Stats(); s.GreetingTimeouts != 0 {
		t.Errorf("greeting timeouts = %d, want 0", s.GreetingTimeouts)
	}
}

// A backend that accepts the connection but never greets is given up after
// the greeting timeout (here 100 ms), not after the 15 s the TCP connect may
// take, and the timeout is counted.
func TestGreetingTimeout(t *testing.T) {
	t.Parallel()
	const timeout = 100 * time.Millisecond
	b := startSilentBackend(t)
	st := openStore(t)
	m := watch.New(watch.Options{
		Store:           st,
		Notifier:        &recorder{},
		Backend:         config.Backend{Address: b.addr()},
		Watch:           masterLogin("master", "masterpw"),
		GreetingTimeout: timeout,
		Logger:          testlog.New(t, "masterpw"),
	})
	e := &env{t: t, st: st, m: m}
	e.register("alice", 1, "INBOX")
	e.run()
	waitStats(t, m, "a greeting timeout", func(s watch.Stats) bool { return s.GreetingTimeouts >= 1 })
	var held time.Duration
	eventually(t, "the watcher to close its first connection", func() bool {
		var closed bool
		held, closed = b.held(0)
		return closed
	})
	// The backend notes the connection a little after the watcher's timer
	// starts, hence the 10% below.
	if held < timeout*9/10 || held > 3*time.Second {
		t.Errorf("the watcher gave up on the silent backend after %v, want about %v", held, timeout)
	}
}
