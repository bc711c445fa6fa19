package watch

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/xapsproxy/xapsproxy/event"
	"github.com/xapsproxy/xapsproxy/internal/imapwire"
	"github.com/xapsproxy/xapsproxy/store"
)

// owner is the one place that decides what is new for one account. It
// keeps the account's registered mailboxes and the state last seen of each
// (UIDVALIDITY, UIDNEXT), and turns the hints of whatever source watches the
// account into events. Sources never decide: they report what they saw.
//
// An owner is not a goroutine: with Dovecot's own events there is no
// per-account work between hints, and 100 000 parked goroutines would cost
// more than the accounts' state. Hints are applied by the caller (a
// connection's goroutine, or one of the manager's hint workers) under the
// owner's mutex, one at a time.
type owner struct {
	m    *Manager
	user string

	mu        sync.Mutex
	mailboxes []string                      // registered, wire names as the devices sent them, INBOX first
	names     map[string]string             // decoded name -> wire name, for hints; nil until needed
	known     map[string]store.MailboxState // by wire name: the state last stored
	conn      *watcher                      // the account's connection, when its source needs one

	status accountStatus // what Manager.Account reports; under its own mutex (status.go)

	// baselineOnly: an owner that only records baselines and never
	// notifies (Baseline's, beside the account's own).
	baselineOnly bool
	// released: the manager dropped this owner; hints still queued for
	// it are ignored.
	released bool
}

// release stops the owner's connection, waits for it and for a hint being
// applied, and makes the owner ignore hints from now on. The manager has
// already dropped it from its owners.
func (o *owner) release() {
	if o.conn != nil {
		o.conn.stop()
	}
	o.mu.Lock()
	o.released = true
	o.mu.Unlock()
}

func newOwner(m *Manager, user string, mailboxes []string) *owner {
	return &owner{m: m, user: user, mailboxes: mailboxes, known: make(map[string]store.MailboxState, 1)}
}

// setMailboxes replaces the registered mailboxes; it reports whether they
// changed.
func (o *owner) setMailboxes(mailboxes []string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if slices.Equal(o.mailboxes, mailboxes) {
		return false
	}
	o.mailboxes = mailboxes
	o.names = nil
	for mb := range o.known {
		if !slices.Contains(mailboxes, mb) {
			delete(o.known, mb)
		}
	}
	return true
}

func (o *owner) snapshot() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.mailboxes
}

// registered returns the wire name under which the devices registered the
// mailbox a source calls name (decoded, as the backend names it).
func (o *owner) registered(name string) (string, bool) {
	if strings.EqualFold(name, "INBOX") {
		if len(o.mailboxes) > 0 && o.mailboxes[0] == "INBOX" {
			return "INBOX", true
		}
		return "", false
	}
	if o.names == nil {
		o.names = make(map[string]string, len(o.mailboxes))
		for _, mb := range o.mailboxes {
			o.names[decodedName(mb)] = mb
		}
	}
	mb, ok := o.names[name]
	return mb, ok
}

// decodedName is a registered (wire) name as the backend names the mailbox
// in UTF-8: modified UTF-7 decoded (RFC 3501 section 5.1.3), or the name
// itself when it is not modified UTF-7 (UTF8=ACCEPT clients send UTF-8).
func decodedName(wire string) string {
	if strings.EqualFold(wire, "INBOX") {
		return "INBOX"
	}
	if name, err := imapwire.DecodeMailbox(wire); err == nil {
		return name
	}
	return wire
}

// apply takes one hint about the account. A look (What Unknown, with the
// state a source read) reports new mail when UIDNEXT grew or UIDVALIDITY
// changed since the state stored; the first look at a mailbox with no state
// stored only sets the baseline. An arrival reported by the backend itself
// is news even when no state was stored. Flag changes and expunges are
// "changed". Hints about mailboxes nobody registered are dropped.
func (o *owner) apply(ctx context.Context, h event.Hint) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.released {
		return
	}
	if !o.baselineOnly && !o.m.owns(o.user) {
		// The account went to another instance (Options.Owns) and this
		// owner is about to be released: it commits nothing, so that the
		// new owner's first look finds the mail, not a state stored here
		// with its push dropped by this instance's pusher.
		return
	}
	mb, ok := o.registered(h.Mailbox)
	if !ok {
		o.m.stats.hintsUnregistered.Add(1)
		return
	}
	o.m.stats.hints.Add(1)
	switch h.What {
	case event.Flags, event.Expunged, event.Gone:
		o.commit(ctx, mb, nil, event.KindChanged)
		if h.What == event.Gone {
			delete(o.known, mb)
		}
		return
	}
	if h.UIDNext == 0 {
		// An arrival without numbers (or a bare "look"): the connection
		// that sent it checks the mailbox itself; nothing to compare here.
		if h.What == event.Arrived {
			o.commit(ctx, mb, nil, event.KindNew)
		}
		return
	}
	st := store.MailboxState{UIDValidity: h.UIDValidity, UIDNext: h.UIDNext}
	prev, found, err := o.state(ctx, mb)
	if err != nil {
		o.m.log.Error("cannot read mailbox state", "user", o.user, "mailbox", mb, "err", err)
		if h.What == event.Arrived {
			o.notify(mb, event.KindNew, 0)
		}
		return
	}
	isNew := false
	switch {
	case !found:
		isNew = h.What == event.Arrived
	case st.UIDValidity != 0 && prev.UIDValidity != st.UIDValidity:
		isNew = true
	case st.UIDNext > prev.UIDNext:
		isNew = true
	default:
		return // nothing the stored state does not already cover
	}
	if st.UIDValidity == 0 { // an arrival that did not say; keep what we had
		st.UIDValidity = prev.UIDValidity
	}
	if !isNew {
		o.commit(ctx, mb, &st, 0)
		return
	}
	o.m.log.Info("new mail", "user", o.user, "mailbox", mb, "uidnext", st.UIDNext)
	o.commit(ctx, mb, &st, event.KindNew)
}

// commit stores the new state of mb (unless st is nil) and, for an event
// of kind (unless 0), the push it causes, in one transaction, and then
// tells the Notifier. The push stage removes the outbox entry once APNs has
// answered, so a crash in between loses nothing: the next start sends it,
// and finds the state already stored, so it does not push the mail twice.
// If the store fails, the event is still reported (without an outbox
// entry), and the state is not remembered, so the next look finds the mail
// again.
func (o *owner) commit(ctx context.Context, mb string, st *store.MailboxState, kind event.Kind) {
	var entry *store.OutboxEntry
	if kind != 0 && !o.baselineOnly {
		entry = &store.OutboxEntry{Changed: kind == event.KindChanged, At: time.Now()}
	}
	if st == nil && entry == nil {
		return
	}
	sctx, cancel := context.WithTimeout(ctx, storeTimeout)
	defer cancel()
	id, err := o.m.opts.Store.CommitMailbox(sctx, o.user, mb, st, entry)
	switch {
	case err != nil:
		o.m.log.Error("cannot store mailbox state", "user", o.user, "mailbox", mb, "err", err)
		delete(o.known, mb)
		id = 0 // no entry in the outbox
	case st != nil:
		o.known[mb] = *st
	}
	if kind != 0 {
		o.notify(mb, kind, id)
	}
}

func (o *owner) notify(mailbox string, kind event.Kind, id int64) {
	if o.baselineOnly {
		return
	}
	o.m.stats.events.Add(1)
	if kind == event.KindNew {
		o.m.stats.eventsNew.Add(1)
	} else {
		o.m.stats.eventsChanged.Add(1)
	}
	o.status.sawEvent(mailbox, kind)
	o.m.opts.Notifier.Notify(event.Event{User: o.user, Mailbox: mailbox, Kind: kind, ID: id})
}

// state returns the stored state of mb, reading the store the first time.
func (o *owner) state(ctx context.Context, mb string) (store.MailboxState, bool, error) {
	if st, ok := o.known[mb]; ok {
		return st, true, nil
	}
	sctx, cancel := context.WithTimeout(ctx, storeTimeout)
	defer cancel()
	st, err := o.m.opts.Store.MailboxState(sctx, o.user, mb)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return st, false, nil
	case err != nil:
		return st, false, err
	}
	o.known[mb] = st
	return st, true, nil
}
