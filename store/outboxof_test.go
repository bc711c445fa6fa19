package store

import (
	"fmt"
	"testing"
)

// OutboxOf is the outbox of one user, oldest first, both kinds.
func TestOutboxOf(t *testing.T) {
	forEachStore(t, func(t *testing.T, s Store) {
		ctx := t.Context()
		var alice []int64
		for _, c := range []struct {
			user, mailbox string
			changed       bool
		}{{"alice", "Notes", true}, {"bob", "INBOX", false}, {"alice", "INBOX", false}, {"alicia", "INBOX", false}} {
			id, err := s.CommitMailbox(ctx, c.user, c.mailbox, nil, &OutboxEntry{Changed: c.changed, At: t0})
			if err != nil {
				t.Fatal(err)
			}
			if c.user == "alice" {
				alice = append(alice, id)
			}
		}
		out, err := s.OutboxOf(ctx, "alice")
		if err != nil {
			t.Fatal(err)
		}
		if len(out) != 2 || out[0] != (OutboxEntry{ID: alice[0], User: "alice", Mailbox: "Notes", Changed: true, At: stored(s, t0)}) ||
			out[1] != (OutboxEntry{ID: alice[1], User: "alice", Mailbox: "INBOX", At: stored(s, t0)}) {
			t.Errorf("OutboxOf(alice) = %+v, want ids %v", out, alice)
		}
		if out, err := s.OutboxOf(ctx, "nobody"); err != nil || len(out) != 0 {
			t.Errorf("OutboxOf(nobody) = %v, %v", out, err)
		}
		all, _ := s.Outbox(ctx)
		if fmt.Sprint(len(all)) != "4" {
			t.Errorf("Outbox has %d entries, want 4", len(all))
		}
	})
}
