package dovecot

import (
	"log/slog"
	"net/http"
	"sync"
	"time"
)

// refusalLog logs refused requests, at most one line per interval, with the
// number refused since the last line: a misconfigured Dovecot (a wrong
// secret) shows up in the log, and a local process posting garbage cannot
// flood it.
type refusalLog struct {
	log   *slog.Logger
	every time.Duration
	now   func() time.Time

	mu         sync.Mutex
	last       time.Time // of the last line; zero before the first
	suppressed int       // refusals not logged since then
}

func (l *refusalLog) note(r *http.Request, status int, reason string) {
	l.mu.Lock()
	now := l.now()
	if !l.last.IsZero() && now.Sub(l.last) < l.every {
		l.suppressed++
		l.mu.Unlock()
		return
	}
	suppressed := l.suppressed
	l.last, l.suppressed = now, 0
	l.mu.Unlock()
	l.log.Warn("dovecot event refused", "status", status, "reason", reason,
		"remote", r.RemoteAddr, "method", r.Method, "path", r.URL.Path,
		"refused_unlogged", suppressed)
}
