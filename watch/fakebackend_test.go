package watch_test

// A scripted IMAP backend for what a real Dovecot cannot show on demand:
// how many connections are opening at once, logins that wait for the test,
// a backend that is there one moment and gone the next.

import (
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-imap/v2/imapserver/imapmemserver"

	"github.com/xapsproxy/xapsproxy/config"
	"github.com/xapsproxy/xapsproxy/internal/testlog"
	"github.com/xapsproxy/xapsproxy/watch"
)

// fakeBackend is go-imap's in-memory IMAP server with one user per account,
// fakeUser(i) for i in 1..n, each with an INBOX. The users are named as the
// watchers log in ("user01*master", password masterpw). The fake counts the
// connections that are opening (accepted, not yet logged in). With
// holdLogins, every LOGIN waits until the test calls releaseLogin. When
// down, it closes every new connection at once, before any greeting, as a
// host with nothing listening would refuse it; kill closes the open ones.
type fakeBackend struct {
	t          *testing.T
	ln         net.Listener
	srv        *imapserver.Server
	inner      *chanListener
	holdLogins bool
	release    chan struct{}
	stopOnce   sync.Once

	mu         sync.Mutex
	down       bool
	opening    int // connections accepted and not logged in
	maxOpening int
	active     int // sessions open, logged in or not
	maxActive  int
	acceptedDn int // connections turned away while down
	conns      []net.Conn
}

func fakeUser(i int) string { return fmt.Sprintf("user%02d", i) }

func startFakeBackend(t *testing.T, n int, holdLogins bool) *fakeBackend {
	t.Helper()
	mem := imapmemserver.New()
	for i := 1; i <= n; i++ {
		u := imapmemserver.NewUser(fakeUser(i)+"*master", "masterpw")
		if err := u.Create("INBOX", nil); err != nil {
			t.Fatal(err)
		}
		mem.AddUser(u)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &fakeBackend{t: t, ln: ln, holdLogins: holdLogins, release: make(chan struct{}),
		inner: &chanListener{addr: ln.Addr(), ch: make(chan net.Conn), done: make(chan struct{})}}
	b.srv = imapserver.New(&imapserver.Options{
		NewSession: func(*imapserver.Conn) (imapserver.Session, *imapserver.GreetingData, error) {
			b.mu.Lock()
			b.opening++
			b.maxOpening = max(b.maxOpening, b.opening)
			b.active++
			b.maxActive = max(b.maxActive, b.active)
			b.mu.Unlock()
			return &fakeSession{Session: mem.NewSession(), b: b}, nil, nil
		},
		Caps:         imap.CapSet{imap.CapIMAP4rev1: {}, imap.CapIdle: {}},
		InsecureAuth: true,
		Logger:       discardLogger{},
	})
	go b.srv.Serve(b.inner)
	go b.acceptLoop()
	t.Cleanup(b.stop)
	return b
}

func (b *fakeBackend) acceptLoop() {
	for {
		c, err := b.ln.Accept()
		if err != nil {
			return
		}
		b.mu.Lock()
		down := b.down
		if down {
			b.acceptedDn++
		} else {
			b.conns = append(b.conns, c)
		}
		b.mu.Unlock()
		if down {
			c.Close()
			continue
		}
		select {
		case b.inner.ch <- c:
		case <-b.inner.done:
			c.Close()
			return
		}
	}
}

func (b *fakeBackend) addr() string { return b.ln.Addr().String() }

// setDown turns new connections away (true) or serves them (false).
func (b *fakeBackend) setDown(down bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.down = down
}

// kill closes every open connection, as a backend that crashed would.
func (b *fakeBackend) kill() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range b.conns {
		c.Close()
	}
	b.conns = nil
}

// counts returns the connections opening now, the most ever opening at
// once, and the connections turned away while down.
func (b *fakeBackend) counts() (opening, maxOpening, turnedAway int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.opening, b.maxOpening, b.acceptedDn
}

// releaseLogin lets one held LOGIN finish, failing the test if none comes.
func (b *fakeBackend) releaseLogin() {
	b.t.Helper()
	select {
	case b.release <- struct{}{}:
	case <-time.After(waitTimeout):
		b.t.Fatalf("no LOGIN to release within %v", waitTimeout)
	}
}

func (b *fakeBackend) stop() {
	b.stopOnce.Do(func() {
		close(b.release) // held logins finish
		b.ln.Close()
		b.srv.Close()
		b.kill()
	})
}

// fakeSession counts its connection as opening until LOGIN succeeds or the
// connection ends.
type fakeSession struct {
	imapserver.Session
	b        *fakeBackend
	loggedIn bool
	once     sync.Once
}

func (s *fakeSession) done() {
	s.once.Do(func() {
		s.b.mu.Lock()
		s.b.opening--
		s.b.mu.Unlock()
	})
}

func (s *fakeSession) Login(username, password string) error {
	if s.b.holdLogins {
		<-s.b.release
	}
	err := s.Session.Login(username, password)
	if err == nil {
		s.done()
	}
	return err
}

func (s *fakeSession) Close() error {
	s.done()
	s.b.mu.Lock()
	s.b.active--
	s.b.mu.Unlock()
	return s.Session.Close()
}

// mostActive returns the most sessions ever open at once.
func (b *fakeBackend) mostActive() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.maxActive
}

// chanListener is a net.Listener whose connections come from a channel.
type chanListener struct {
	addr net.Addr
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }

type discardLogger struct{}

func (discardLogger) Printf(string, ...any) {}

// newFakeEnv is an env around b: a store with one registration (INBOX) for
// each of the first n accounts, and a manager (not yet running) whose
// options edit may adjust (defaults: backoff 50 ms to 500 ms).
func newFakeEnv(t *testing.T, b *fakeBackend, n int, edit func(*watch.Options)) *env {
	t.Helper()
	logger := testlog.New(t, "masterpw")
	e := &env{t: t, st: openStore(t), rec: &recorder{}, log: logger}
	opts := watch.Options{
		Store:      e.st,
		Notifier:   e.rec,
		Backend:    config.Backend{Address: b.addr()},
		Watch:      masterLogin("master", "masterpw"),
		Source:     watch.SourceIdle,
		MinBackoff: 50 * time.Millisecond,
		MaxBackoff: 500 * time.Millisecond,
		Logger:     logger,
	}
	if edit != nil {
		edit(&opts)
	}
	e.m = watch.New(opts)
	for i := 1; i <= n; i++ {
		e.register(fakeUser(i), i, "INBOX")
	}
	return e
}
