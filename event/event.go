// Package event holds what the stages tell each other about mail: a Hint is
// what an event source saw on the backend ("mailbox M of user U changed"),
// an Event is what an account's owner decided is worth a push. Sources
// (Dovecot's own events, NOTIFY, IDLE) send hints; only the owner, which
// keeps the account's mailbox state, turns them into events, which the push
// stage consumes. The package has no dependencies, so push and the event
// listener need neither watch nor an IMAP library.
package event

// Kind says what happened in a mailbox.
type Kind int

const (
	// KindNew means messages arrived: push at once.
	KindNew Kind = iota + 1
	// KindChanged means flags changed or messages went away: a push may wait
	// and be coalesced with others.
	KindChanged
)

func (k Kind) String() string {
	switch k {
	case KindNew:
		return "new"
	case KindChanged:
		return "changed"
	}
	return "unknown"
}

// Event is an owner's verdict about one registered mailbox of one user.
// Mailbox is the name as the devices registered it (on the wire, modified
// UTF-7 unless UTF8=ACCEPT), so the push can name it as the device knows it.
//
// ID is the event's entry in the store's outbox, where the owner committed
// it with the mailbox state that caused it; the push stage removes the
// entry once the pushes it caused were answered. 0 = not in the outbox (a
// store error, or a test): the push is sent all the same, but not again
// after a crash.
type Event struct {
	User    string
	Mailbox string
	Kind    Kind
	ID      int64
}

// Notifier receives events. Notify must not block.
type Notifier interface {
	Notify(Event)
}

// What a Hint reports.
type What int

const (
	// Unknown: something may have changed; the owner looks for itself.
	Unknown What = iota
	// Arrived: messages were added (delivered, appended, copied or moved in).
	Arrived
	// Flags: flags or keywords of messages changed.
	Flags
	// Expunged: messages were removed.
	Expunged
	// Renamed or deleted: the mailbox itself went away under this name.
	Gone
)

func (w What) String() string {
	switch w {
	case Arrived:
		return "arrived"
	case Flags:
		return "flags"
	case Expunged:
		return "expunged"
	case Gone:
		return "gone"
	}
	return "unknown"
}

// Hint is what a source saw of one mailbox. Mailbox is the name as the
// backend reports it, decoded (UTF-8, "INBOX" in any case for the inbox).
// UIDValidity and UIDNext are zero when the source does not know them; when
// UIDNext is set it is a lower bound of the mailbox's UIDNEXT (for a
// delivery: the new message's UID + 1).
type Hint struct {
	User        string
	Mailbox     string
	What        What
	UIDValidity uint32
	UIDNext     uint32
}
