package watch

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

// Event is what a watcher reports about one mailbox of one user.
type Event struct {
	User    string
	Mailbox string
	Kind    Kind
}

// Notifier receives events. Notify must not block: the watcher calls it from
// its connection loop.
type Notifier interface {
	Notify(Event)
}
