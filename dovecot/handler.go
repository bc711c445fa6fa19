// Package dovecot receives Dovecot's own mail events, posted by
// contrib/dovecot/xapsproxy.lua from inside Dovecot's IMAP, LMTP and LDA
// processes (the push_notification Lua driver that Debian's dovecot-core
// ships), and turns them into event.Hints.
//
// One request is one Dovecot mailbox transaction: a delivery, an APPEND, a
// STORE, an EXPUNGE, a RENAME or a DELETE. It is
//
//	POST /dovecot/events
//	Authorization: Bearer <events.secret>
//	Content-Type: application/json
//
//	{"user":"alice","events":[
//	  {"mailbox":"INBOX","what":"arrived","uidvalidity":1700000000,"uidnext":43},
//	  {"mailbox":"Archive","what":"gone"}]}
//
// with "user" Dovecot's name for the user (after its auth_username_format,
// as backend.username_format names users), "what" one of arrived, flags,
// expunged, gone and unknown (see event.What), uidvalidity and uidnext optional (uidnext: the highest new
// UID + 1). Unknown fields are ignored; an unknown "what" is refused, so a
// script newer than the proxy is noticed instead of half understood.
//
// The handler answers 204 once the request is read and valid, after handing
// each hint to Options.Hint, which must not block: Dovecot waits for the
// answer before it answers its own client (the MTA, the IMAP client). It
// sends one hint per (mailbox, what) per request. A missing or wrong secret
// is 401, another method 405, a body over Options.MaxBody 413, anything else
// malformed 400 with a one-line reason; the connection of a refused request
// is closed after the answer. The secret is compared in constant time and
// never logged.
package dovecot

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/xapsproxy/xapsproxy/event"
)

// Path is the one path the handler serves.
const Path = "/dovecot/events"

// MinSecretLen is the shortest secret NewHandler takes, in bytes.
const MinSecretLen = 16

// DefaultMaxBody bounds a request body when Options.MaxBody is 0. A
// transaction touches one mailbox, so a request is normally well under 1 KiB.
const DefaultMaxBody = 64 << 10

// maxEvents bounds the events of one request, whatever the body size.
const maxEvents = 1000

// Options configures a Handler.
type Options struct {
	// Secret is the bearer token Dovecot sends (events.secret); at least
	// MinSecretLen bytes.
	Secret string
	// Hint receives each hint of an accepted request. It must not block:
	// it runs in the request, and Dovecot waits for the answer.
	Hint func(event.Hint)
	// Logger for refused requests (at most one line a minute) and, at debug
	// level, accepted ones; nil means slog.Default().
	Logger *slog.Logger
	// MaxBody bounds a request body in bytes; 0 means DefaultMaxBody.
	MaxBody int64
}

// Stats counts requests since the handler was made.
type Stats struct {
	Accepted     uint64 // answered 204
	Unauthorized uint64 // answered 401: no or a wrong secret
	Refused      uint64 // answered 400, 404, 405 or 413
	Hints        uint64 // hints passed to Options.Hint
}

// Handler is the http.Handler for Dovecot's events. It is safe for
// concurrent use and has no goroutines of its own.
type Handler struct {
	secretSum [sha256.Size]byte
	hint      func(event.Hint)
	log       *slog.Logger
	maxBody   int64
	refusals  refusalLog

	accepted, unauthorized, refused, hints atomic.Uint64
}

// NewHandler checks opts and returns a Handler.
func NewHandler(opts Options) (*Handler, error) {
	if len(opts.Secret) < MinSecretLen {
		return nil, fmt.Errorf("dovecot: secret of %d bytes, want at least %d", len(opts.Secret), MinSecretLen)
	}
	if opts.Hint == nil {
		return nil, errors.New("dovecot: Options.Hint is nil")
	}
	if opts.MaxBody < 0 {
		return nil, errors.New("dovecot: Options.MaxBody is negative")
	}
	h := &Handler{
		secretSum: sha256.Sum256([]byte(opts.Secret)),
		hint:      opts.Hint,
		log:       opts.Logger,
		maxBody:   opts.MaxBody,
	}
	if h.log == nil {
		h.log = slog.Default()
	}
	if h.maxBody == 0 {
		h.maxBody = DefaultMaxBody
	}
	h.refusals = refusalLog{log: h.log, every: time.Minute, now: time.Now}
	return h, nil
}

// Stats returns the counters so far.
func (h *Handler) Stats() Stats {
	return Stats{
		Accepted:     h.accepted.Load(),
		Unauthorized: h.unauthorized.Load(),
		Refused:      h.refused.Load(),
		Hints:        h.hints.Load(),
	}
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != Path {
		h.refuse(w, r, http.StatusNotFound, "not found; Dovecot's events go to "+Path)
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		h.refuse(w, r, http.StatusMethodNotAllowed, "only POST")
		return
	}
	if !h.authorized(r) {
		h.unauthorized.Add(1)
		h.refusals.note(r, http.StatusUnauthorized, "no or a wrong bearer secret: set xapsproxy_secret in Dovecot to events.secret")
		w.Header().Set("WWW-Authenticate", `Bearer realm="xapsproxy"`)
		w.Header().Set("Connection", "close")
		http.Error(w, "no or a wrong bearer secret", http.StatusUnauthorized)
		return
	}
	hints, status, reason := h.read(w, r)
	if status != 0 {
		h.refuse(w, r, status, reason)
		return
	}
	for _, hint := range hints {
		h.hint(hint)
	}
	h.hints.Add(uint64(len(hints)))
	h.accepted.Add(1)
	if h.log.Enabled(r.Context(), slog.LevelDebug) {
		h.log.Debug("dovecot event", "user", hints[0].User, "hints", len(hints))
	}
	w.WriteHeader(http.StatusNoContent)
}

// authorized compares the bearer token with the secret in constant time,
// lengths included (both are hashed first).
func (h *Handler) authorized(r *http.Request) bool {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	sum := sha256.Sum256([]byte(token))
	return subtle.ConstantTimeCompare(sum[:], h.secretSum[:]) == 1
}

// refuse answers status and closes the connection afterwards: only
// Dovecot's accepted requests keep one open (see MaxConns).
func (h *Handler) refuse(w http.ResponseWriter, r *http.Request, status int, reason string) {
	h.refused.Add(1)
	h.refusals.note(r, status, reason)
	w.Header().Set("Connection", "close")
	http.Error(w, reason, status)
}
