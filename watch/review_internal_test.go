package watch

// Written in review of owner.commit.

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/xapsproxy/xapsproxy/event"
	"github.com/xapsproxy/xapsproxy/store"
)

// lostCommitStore fails CommitMailbox the way the group commit does when
// the shared transaction is lost after the entry's INSERT ran: with the id
// the INSERT returned (see store.TestReviewFailedCommitMailboxReturnsNoID).
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

// A store error still notifies, without an outbox entry: the event must
// carry ID 0, not the id of a row that was rolled back (and that the next
// entry will get again).
func TestReviewOwnerNotifiesIDZeroOnStoreError(t *testing.T) {
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
