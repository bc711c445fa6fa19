// Package credential is the captured-credential store of watch.auth =
// "captured", for IMAP servers without master users: per user, the password
// of their last successful login through the proxy (LOGIN, AUTHENTICATE
// PLAIN or LOGIN), sealed with AES-256-GCM under a key kept in its own file
// (watch.secret_key_file), never in the database. A random nonce per seal;
// the user name is the additional data, so a sealed row moved to another
// user does not open.
//
// Store implements watch.Credentials: watchers log in as the user with the
// stored password. When the backend refuses it (the password was changed),
// Refused drops it, and the user's watcher waits until the user logs in
// through the proxy again (the phone does, with the new password).
//
// The password never appears in a log line, an error or a panic message;
// the copies this package makes are cleared once used (Go strings, which
// the proxy hands over and the watcher takes, cannot be).
//
// Use: key, err := credential.LoadKey(path); creds := credential.New(
// credential.Options{Key: key, Store: st}); proxy.Options.Captured =
// creds.Captured; watch.Options.Credentials = creds.
package credential

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/xapsproxy/xapsproxy/store"
	"github.com/xapsproxy/xapsproxy/watch"
)

// captureTimeout bounds what Captured does for one login: a read and at
// most one write of the store, on the session's goroutine.
const captureTimeout = 5 * time.Second

// Backing is where the sealed credentials are kept: store.Store.
type Backing interface {
	SetCredential(ctx context.Context, user string, sealed []byte) error
	Credential(ctx context.Context, user string) ([]byte, error)
	DeleteCredential(ctx context.Context, user string, sealed []byte) (bool, error)
}

// Options configures a Store.
type Options struct {
	Key   *Key    // required
	Store Backing // required
	// OnChange, if set, is called after a user's credential was stored
	// anew (their first login, or a new password), e.g. watch.Manager.Sync
	// so that a watcher waiting for it logs in.
	OnChange func(user string)
	// Logger; nil discards.
	Logger *slog.Logger
}

// Store keeps captured credentials. It is safe for concurrent use.
type Store struct {
	opts Options
	log  *slog.Logger
}

var _ watch.Credentials = (*Store)(nil)

// New returns a Store; it does no I/O.
func New(opts Options) *Store {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Store{opts: opts, log: log}
}

// Captured is proxy.Options.Captured: the backend accepted password for
// user. It stores it (bounded by a short timeout) and logs a failure; see
// Capture.
func (s *Store) Captured(user, password string) {
	ctx, cancel := context.WithTimeout(context.Background(), captureTimeout)
	defer cancel()
	pw := []byte(password)
	defer clear(pw)
	if _, err := s.Capture(ctx, user, pw); err != nil {
		s.log.Error("could not store the captured password; the account is watched again after the user's next login",
			"user", user, "err", err)
	}
}

// Capture stores password as user's credential and reports whether it
// changed. A stored credential that already opens to password is left as it
// is, so a phone's every session costs one read, not a write.
func (s *Store) Capture(ctx context.Context, user string, password []byte) (changed bool, err error) {
	if user == "" || len(password) == 0 {
		return false, errors.New("credential: empty user or password")
	}
	if same, err := s.matches(ctx, user, password); err != nil || same {
		return false, err
	}
	sealed, err := s.opts.Key.Seal(user, password)
	if err != nil {
		return false, err
	}
	if err := s.opts.Store.SetCredential(ctx, user, sealed); err != nil {
		return false, fmt.Errorf("credential: %w", err)
	}
	s.log.Info("stored the password of the user's login for watching", "user", user)
	if s.opts.OnChange != nil {
		s.opts.OnChange(user)
	}
	return true, nil
}

// current returns user's sealed credential and its password; (nil, nil,
// nil) when there is none, or when it does not open (the key file was
// replaced): either way the next login stores a new one.
func (s *Store) current(ctx context.Context, user string) (sealed, password []byte, err error) {
	sealed, err = s.opts.Store.Credential(ctx, user)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("credential: %w", err)
	}
	password, err = s.opts.Key.Open(user, sealed)
	if err != nil {
		s.log.Warn("stored password cannot be opened (was watch.secret_key_file replaced?); waiting for the user's next login",
			"user", user)
		return nil, nil, nil
	}
	return sealed, password, nil
}

// matches reports whether user's stored credential is password.
func (s *Store) matches(ctx context.Context, user string, password []byte) (bool, error) {
	_, stored, err := s.current(ctx, user)
	if err != nil || stored == nil {
		return false, err
	}
	defer clear(stored)
	return subtle.ConstantTimeCompare(stored, password) == 1, nil
}

// For implements watch.Credentials: the user logs in as themselves with the
// captured password. With none stored (or none that opens), the error wraps
// watch.ErrNoCredential.
func (s *Store) For(ctx context.Context, user string) (login, password string, err error) {
	_, pw, err := s.current(ctx, user)
	if err != nil {
		return "", "", err
	}
	if pw == nil {
		return "", "", fmt.Errorf("credential: %s: %w", user, watch.ErrNoCredential)
	}
	defer clear(pw)
	return user, string(pw), nil
}

// Refused implements watch.Credentials: the backend refused password for
// good, so it is dropped unless a newer one was stored meanwhile, and the
// user's watcher waits for their next login.
func (s *Store) Refused(ctx context.Context, user, _, password string) {
	sealed, stored, err := s.current(ctx, user)
	if err != nil {
		s.log.Warn("could not check the refused password", "user", user, "err", err)
		return
	}
	if stored == nil {
		return
	}
	pw := []byte(password)
	same := subtle.ConstantTimeCompare(stored, pw) == 1
	clear(stored)
	clear(pw)
	if !same {
		return // replaced by a newer login already
	}
	// Only if still that value: a login storing a new one meanwhile wins.
	deleted, err := s.opts.Store.DeleteCredential(ctx, user, sealed)
	switch {
	case err != nil:
		s.log.Warn("could not drop the refused password", "user", user, "err", err)
	case deleted:
		s.log.Warn("captured password refused by the backend; waiting for the user's next login", "user", user)
	}
}
