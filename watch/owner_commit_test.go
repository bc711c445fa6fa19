package watch

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/xapsproxy/xapsproxy/event"
	"github.com/xapsproxy/xapsproxy/store"
)

// lostCommitStore fails CommitMailbox with an id beside the error, the id
// an INSERT got in a transaction since lost: the owner must not hand it on
// (see store.TestFailedCommitMailboxReturnsNoID for why it is no one's).
type lostCommitStore struct{ store.Store }

func (lostCommitStore) MailboxState(context.Context, string, string) (store.MailboxState, error) {
	return store.MailboxState{UIDValidity: 1, UIDNext: 1}, nil
}

func (lostCommitStore) CommitMailbox(context.Context, string, string, *store.MailboxState, *store.OutboxEntry) (int64, error) {
	return 7, errors.New("store: commit mailbox: disk I/O error")
}

type events struct {
	mu  sync.Mutex
	got []event.Event
}

func (e *events) Notify(ev event.Event) { e.mu.Lock(); e.got = append(e.got, ev); e.mu.Unlock() }

// When the store fails to commit a mailbox, the owner still notifies, but
// with no outbox entry: the event carries ID 0, whatever id the store
// returned with its error (a row rolled back, whose id the next entry gets
// again), and the state is not remembered, so it is committed again.
func TestOwnerNotifiesWithNoOutboxIDOnStoreError(t *testing.T) {
	rec := &events{}
	m := New(Options{Store: lostCommitStore{}, Notifier: rec})
	o := newOwner(m, "alice", []string{"INBOX"})
	o.apply(t.Context(), event.Hint{User: "alice", Mailbox: "INBOX", What: event.Arrived, UIDValidity: 1, UIDNext: 5})
	if len(rec.got) != 1 {
		t.Fatalf("events = %v; want one", rec.got)
	}
	if id := rec.got[0].ID; id != 0 {
		t.Errorf("event after a failed commit has ID %d; want 0", id)
	}
	if _, ok := o.known["INBOX"]; ok {
		t.Error("the state of a failed commit is remembered")
	}
}
