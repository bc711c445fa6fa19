package dovecot

import (
	"container/list"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"
)

// Timeouts of the server NewServer makes. Dovecot sends one small request
// at a time per connection and waits at most about a second for the answer.
const (
	readTimeout  = 10 * time.Second
	writeTimeout = 10 * time.Second
	idleTimeout  = time.Minute
)

// MaxConns bounds the connections the server NewServer makes holds open.
// Each Dovecot process that posted lately keeps one, idle between its
// requests; anyone who can reach the listener (every local user, with the
// default loopback address) can open more without the secret. At the
// limit, a new connection closes the one idle longest, or else the one
// whose request (or silence) began longest ago: so the file descriptors and
// memory the listener takes from the rest of the proxy stay bounded, and a
// request Dovecot sends on a new connection, which it finishes within about
// a millisecond, gets through unless MaxConns others are opened meanwhile.
// Dovecot opens a new connection when it finds its old one closed.
const MaxConns = 512

// NewServer returns an http.Server for h with a deadline on every read and
// write, small header limits and at most MaxConns connections, logging its
// own errors (a client that hung up mid-request, say) to logger at warn
// level; nil means slog.Default(). Serve it on the events listener.
func NewServer(h http.Handler, logger *slog.Logger) *http.Server {
	if logger == nil {
		logger = slog.Default()
	}
	conns := newConnLimit(MaxConns, logger)
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: readTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    8 << 10,
		ConnState:         conns.state,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
}

// connLimit keeps a server's connections in two lists, idle ones (between
// requests) and the others (new, or in a request), each oldest first by
// their last change of state, and closes the first of them when a new
// connection would make more than max. It is the server's ConnState hook,
// which net/http calls for a new connection in its accept loop, before the
// connection is served.
type connLimit struct {
	max int
	log *slog.Logger

	mu         sync.Mutex
	idle, busy list.List // of net.Conn
	elems      map[net.Conn]connElem
	lastWarn   time.Time
	unlogged   int // busy connections closed since the last warning
}

type connElem struct {
	e    *list.Element
	from *list.List // idle or busy
}

func newConnLimit(max int, log *slog.Logger) *connLimit {
	l := &connLimit{max: max, log: log, elems: make(map[net.Conn]connElem)}
	l.idle.Init()
	l.busy.Init()
	return l
}

func (l *connLimit) state(c net.Conn, s http.ConnState) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if ce, ok := l.elems[c]; ok {
		ce.from.Remove(ce.e)
		delete(l.elems, c)
	}
	switch s {
	case http.StateNew:
		if len(l.elems) >= l.max {
			l.evict()
		}
		l.elems[c] = connElem{l.busy.PushBack(c), &l.busy}
	case http.StateActive:
		l.elems[c] = connElem{l.busy.PushBack(c), &l.busy}
	case http.StateIdle:
		l.elems[c] = connElem{l.idle.PushBack(c), &l.idle}
	}
	// StateClosed, StateHijacked: forgotten above.
}

// evict closes the connection idle longest, or else the oldest busy one.
// Called with mu held.
func (l *connLimit) evict() {
	e := l.idle.Front()
	from := &l.idle
	if e == nil {
		e, from = l.busy.Front(), &l.busy
		l.warn()
	}
	if e == nil {
		return
	}
	c := from.Remove(e).(net.Conn)
	delete(l.elems, c)
	c.Close() // its goroutine ends; StateClosed finds it gone
}

// warn logs, at most once a minute, that connections that were not idle
// were closed: something holds many connections open without requests.
func (l *connLimit) warn() {
	now := time.Now()
	if !l.lastWarn.IsZero() && now.Sub(l.lastWarn) < time.Minute {
		l.unlogged++
		return
	}
	l.log.Warn("events listener at its connection limit with none idle; closed the oldest",
		"max_conns", l.max, "closed_unlogged", l.unlogged)
	l.lastWarn, l.unlogged = now, 0
}
