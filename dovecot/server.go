package dovecot

import (
	"log/slog"
	"net/http"
	"time"
)

// Timeouts of the server NewServer makes. Dovecot sends one small request
// per connection and waits at most about a second for the answer.
const (
	readTimeout  = 10 * time.Second
	writeTimeout = 10 * time.Second
	idleTimeout  = time.Minute
)

// NewServer returns an http.Server for h with a deadline on every read and
// write and small header limits, logging its own errors (a client that
// hung up mid-request, say) to logger at warn level; nil means
// slog.Default(). Serve it on the events listener.
func NewServer(h http.Handler, logger *slog.Logger) *http.Server {
	if logger == nil {
		logger = slog.Default()
	}
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: readTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    8 << 10,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
}
