// Package store keeps what xapsproxy must not forget: each device's
// XAPPLEPUSHSERVICE registration and, per watched mailbox, the UIDVALIDITY and
// UIDNEXT last seen, so that mail arriving while the proxy was away is still
// pushed. Store is the interface the rest of the program uses, with two
// implementations: Open returns the embedded SQLite one (one file, one
// instance), OpenPostgres the PostgreSQL one, which several instances may
// share. Both pass the same contract tests.
package store

import (
	"context"
	"errors"
	"strings"
	"time"
)

// Registration is one device's request to be woken for one IMAP account.
//
// A registration is identified by (User, DeviceToken): the newest account id
// for a token wins, so a device restored from a backup (new account id, same
// token) replaces its old entry, while one phone with two accounts on the same
// server (same token, two users) keeps both.
type Registration struct {
	User        string    // login name as the client authenticated
	DeviceToken string    // 64 hex digits, lower case (see NormalizeToken)
	AccountID   string    // aps-account-id, echoed in every push
	Subtopic    string    // aps-subtopic, normally com.apple.mobilemail
	Mailboxes   []string  // mailbox names as on the wire; never empty (v1 means INBOX)
	Version     int       // aps-version the device sent: 1 or 2
	Topic       string    // APNs topic answered to the device
	Registered  time.Time // first registration of (User, DeviceToken)
	Renewed     time.Time // latest registration (iOS re-registers on every session)

	LastPush       time.Time // zero if never pushed
	LastPushResult string    // e.g. "200", "410 Unregistered", "error: ..."
}

// MaxRegistrationsPerUser bounds the devices of one account: each costs an
// APNs request per new mail, so a client must not be able to add thousands.
const MaxRegistrationsPerUser = 100

// HasMailbox reports whether the registration asks for pushes about mailbox.
// INBOX is case-insensitive (RFC 9051 section 5.1); other names are exact.
func (r *Registration) HasMailbox(mailbox string) bool {
	for _, m := range r.Mailboxes {
		if m == mailbox || (strings.EqualFold(m, "INBOX") && strings.EqualFold(mailbox, "INBOX")) {
			return true
		}
	}
	return false
}

// NormalizeToken returns the canonical (lower case) form of a device token.
func NormalizeToken(token string) string { return strings.ToLower(token) }

// MailboxState is what a watcher last saw of one mailbox.
type MailboxState struct {
	UIDValidity uint32
	UIDNext     uint32
}

// OutboxEntry is a push owed to the devices of User that registered
// Mailbox: committed with the mailbox state that caused it (CommitMailbox)
// and removed when APNs has answered the pushes it caused (FinishPushes), so
// that a crash in between loses nothing: the next start sends it.
type OutboxEntry struct {
	ID      int64  // assigned by the store: above every id still owed, or given since it opened
	User    string // login name, as in Registration.User
	Mailbox string // as the devices registered it
	// Changed is true for flag changes and expunges (a push that may wait
	// and be coalesced), false for new mail (a push at once).
	Changed bool
	At      time.Time // when it was committed
}

// PushRecord is the outcome of one push to one registration, for
// FinishPushes.
type PushRecord struct {
	User, DeviceToken string
	At                time.Time
	Result            string // as Registration.LastPushResult
}

// ErrNotFound is returned when a lookup finds nothing.
var ErrNotFound = errors.New("not found")

// ErrLimit is returned by Register for a new device of a user who already has
// MaxRegistrationsPerUser.
var ErrLimit = errors.New("too many registrations for this user")

// ShortToken is how device tokens appear in logs: the first 8 hex digits.
func ShortToken(token string) string {
	if len(token) > 8 {
		return token[:8]
	}
	return token
}

// Store is the durable state of the proxy. Implementations are safe for
// concurrent use. A method that returns nil has committed its change durably
// (but see CommitMailbox).
type Store interface {
	// Register inserts or replaces the registration for (r.User, r.DeviceToken).
	// Registered is kept from an existing entry; Renewed is set to r.Renewed.
	// A new device beyond MaxRegistrationsPerUser fails with ErrLimit.
	Register(ctx context.Context, r Registration) error
	// Registrations returns the registrations of one user, ordered by token.
	Registrations(ctx context.Context, user string) ([]Registration, error)
	// All returns every registration, ordered by user and token.
	All(ctx context.Context) ([]Registration, error)
	// Users returns every user with at least one registration, sorted.
	Users(ctx context.Context) ([]string, error)
	// Delete removes one registration and reports whether it existed.
	// Mailbox state is kept (one row per user and mailbox): a device that
	// registers again later gets the mail that came in between pushed.
	Delete(ctx context.Context, user, token string) (bool, error)
	// DeleteToken removes every registration of a device token (APNs said the
	// token is dead) and returns the users that had one.
	DeleteToken(ctx context.Context, token string) ([]string, error)
	// RegistrationsOf returns the registrations of several users at once,
	// by user; users with none are absent from the map.
	RegistrationsOf(ctx context.Context, users []string) (map[string][]Registration, error)
	// RecordPush remembers the outcome of the latest push to a registration.
	RecordPush(ctx context.Context, user, token string, at time.Time, result string) error
	// FinishPushes records the outcomes of many pushes and removes the
	// outbox entries done (their pushes were answered or expired) in one
	// transaction; done entries are named by ID, User, Mailbox and Changed.
	// Records of registrations since deleted and entries no longer in the
	// outbox (a newer one replaced them) are skipped.
	FinishPushes(ctx context.Context, records []PushRecord, done []OutboxEntry) error

	// MailboxState returns the stored state, or ErrNotFound.
	MailboxState(ctx context.Context, user, mailbox string) (MailboxState, error)
	// SetMailboxState stores the state of one mailbox.
	SetMailboxState(ctx context.Context, user, mailbox string, st MailboxState) error
	// CommitMailbox stores, in one transaction, the new state of a mailbox
	// (st, unless nil) and the push it causes (push, unless nil: its User
	// and Mailbox are user and mailbox, its ID is ignored), which replaces
	// an entry still in the outbox for the same user, mailbox and kind,
	// since the newer push covers it. It returns the new entry's ID, or 0
	// without push. What it commits survives a crash of the process; a
	// power cut may lose the latest commits (state and entry together, so
	// the next look at the mailbox finds the mail again), as it may those
	// of FinishPushes and SetMailboxState.
	CommitMailbox(ctx context.Context, user, mailbox string, st *MailboxState, push *OutboxEntry) (int64, error)
	// Outbox returns every entry in the outbox, oldest first.
	Outbox(ctx context.Context) ([]OutboxEntry, error)
	// OutboxOf returns the entries in the outbox for one user, oldest
	// first (for status reports).
	OutboxOf(ctx context.Context, user string) ([]OutboxEntry, error)

	// SetCredential stores the sealed credential of user (package
	// credential seals it; the store never sees a password), replacing
	// any other.
	SetCredential(ctx context.Context, user string, sealed []byte) error
	// Credential returns the sealed credential of user, or ErrNotFound.
	Credential(ctx context.Context, user string) ([]byte, error)
	// DeleteCredential removes the credential of user only if it is still
	// sealed, byte for byte: a refusal of an old password must not drop a
	// newer one stored meanwhile. It reports whether it removed one.
	DeleteCredential(ctx context.Context, user string, sealed []byte) (bool, error)

	// Ping reports whether the store answers.
	Ping(ctx context.Context) error
	// PingWrite reports whether the store can be written, writing nothing.
	PingWrite(ctx context.Context) error
	// Counts counts the registrations and the outbox, for monitoring.
	Counts(ctx context.Context) (Counts, error)

	Close() error
}
