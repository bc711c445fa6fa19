package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"testing"
)

func TestCommitMailboxStoresStateAndPushTogether(t *testing.T) {
	forEachStore(t, func(t *testing.T, s Store) {
		ctx := t.Context()
		st := MailboxState{UIDValidity: 7, UIDNext: 42}
		id, err := s.CommitMailbox(ctx, "alice", "INBOX", &st, &OutboxEntry{At: t0})
		if err != nil || id <= 0 {
			t.Fatalf("CommitMailbox = %d, %v; want an id", id, err)
		}
		if got, err := s.MailboxState(ctx, "alice", "INBOX"); err != nil || got != st {
			t.Fatalf("MailboxState = %+v, %v; want %+v", got, err, st)
		}
		out, err := s.Outbox(ctx)
		want := OutboxEntry{ID: id, User: "alice", Mailbox: "INBOX", At: stored(s, t0)}
		if err != nil || len(out) != 1 || out[0] != want {
			t.Fatalf("Outbox = %+v, %v; want [%+v]", out, err, want)
		}
	})
}

func TestCommitMailboxReplacesSameKindOnly(t *testing.T) {
	forEachStore(t, func(t *testing.T, s Store) {
		ctx := t.Context()
		commit := func(user, mailbox string, changed bool) int64 {
			t.Helper()
			id, err := s.CommitMailbox(ctx, user, mailbox, nil, &OutboxEntry{Changed: changed, At: t0})
			if err != nil {
				t.Fatal(err)
			}
			return id
		}
		first := commit("alice", "INBOX", false)
		change := commit("alice", "INBOX", true)
		notes := commit("alice", "Notes", false)
		bob := commit("bob", "INBOX", false)
		second := commit("alice", "INBOX", false) // covers first
		if second <= bob {
			t.Fatalf("replacing entry got id %d, not above every earlier id (%d)", second, bob)
		}
		out, err := s.Outbox(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var ids []int64
		for _, e := range out {
			ids = append(ids, e.ID)
		}
		if fmt.Sprint(ids) != fmt.Sprint([]int64{change, notes, bob, second}) {
			t.Fatalf("outbox ids = %v; want %v (first=%d replaced)", ids, []int64{change, notes, bob, second}, first)
		}
		// A push answered for the replaced entry removes nothing newer.
		if err := s.FinishPushes(ctx, nil, []OutboxEntry{{ID: first, User: "alice", Mailbox: "INBOX"}}); err != nil {
			t.Fatal(err)
		}
		if out, _ := s.Outbox(ctx); len(out) != 4 {
			t.Fatalf("finishing a replaced id removed entries: %+v", out)
		}
	})
}

func TestFinishPushesRecordsAndRemoves(t *testing.T) {
	forEachStore(t, func(t *testing.T, s Store) {
		ctx := t.Context()
		mustRegister(t, s, reg("alice", tokenA), reg("bob", tokenB))
		a, _ := s.CommitMailbox(ctx, "alice", "INBOX", nil, &OutboxEntry{At: t0})
		b, _ := s.CommitMailbox(ctx, "bob", "INBOX", nil, &OutboxEntry{At: t0})
		err := s.FinishPushes(ctx, []PushRecord{
			{User: "alice", DeviceToken: tokenA, At: t0, Result: "200"},
			{User: "carol", DeviceToken: tokenC, At: t0, Result: "200"}, // no such registration: skipped
		}, []OutboxEntry{{ID: a, User: "alice", Mailbox: "INBOX"}, {ID: b, User: "bob", Mailbox: "INBOX", Changed: true}, {ID: 9999, User: "x", Mailbox: "INBOX"}})
		if err != nil {
			t.Fatalf("FinishPushes: %v", err)
		}
		out, _ := s.Outbox(ctx)
		if len(out) != 1 || out[0].ID != b {
			t.Fatalf("outbox after finishing %d (and bob's id as a change) = %+v; want only %d", a, out, b)
		}
		r := registrations(t, s, "alice")[0]
		if r.LastPushResult != "200" || !r.LastPush.Equal(stored(s, t0)) {
			t.Fatalf("alice's last push = %v %q; want %v 200", r.LastPush, r.LastPushResult, t0)
		}
	})
}

func TestRegistrationsOf(t *testing.T) {
	forEachStore(t, func(t *testing.T, s Store) {
		mustRegister(t, s, reg("alice", tokenA), reg("alice", tokenB), reg("bob", tokenC), reg("carol", tokenA))
		users := []string{"alice", "bob", "nobody"}
		for i := range 2 * maxParams { // more than one query's worth
			users = append(users, fmt.Sprintf("u%d", i))
		}
		got, err := s.RegistrationsOf(t.Context(), users)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 2 || len(got["alice"]) != 2 || len(got["bob"]) != 1 {
			t.Fatalf("RegistrationsOf = %v; want alice's two and bob's one", got)
		}
		if got["alice"][0].DeviceToken != tokenA || got["alice"][1].DeviceToken != tokenB {
			t.Fatalf("alice's registrations not ordered by token: %+v", got["alice"])
		}
	})
}

// Writes made at once share transactions; one that fails is rolled back
// alone, and every other is committed.
func TestGroupCommitIsolatesFailures(t *testing.T) {
	s := newStore(t)
	ctx := t.Context()
	const n = 200
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			user := fmt.Sprintf("u%03d", i)
			if i%10 == 0 {
				user = "" // refused before it queues
			}
			st := MailboxState{UIDValidity: 1, UIDNext: uint32(i + 1)}
			_, errs[i] = s.CommitMailbox(ctx, user, "INBOX", &st, &OutboxEntry{At: t0})
		})
	}
	// And writes that fail inside the shared transaction.
	for i := range 20 {
		wg.Go(func() {
			err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
				if _, err := tx.ExecContext(ctx, `INSERT INTO mailbox_state (user, mailbox, uid_validity, uid_next) VALUES ('bad', ?, 1, 1)`, i); err != nil {
					return err
				}
				return fmt.Errorf("write %d fails after writing", i)
			})
			if err == nil {
				t.Errorf("failing write %d reported success", i)
			}
		})
	}
	wg.Wait()
	out, err := s.Outbox(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != n-n/10 {
		t.Errorf("outbox has %d entries; want %d", len(out), n-n/10)
	}
	for i, err := range errs {
		if (err != nil) != (i%10 == 0) {
			t.Errorf("write %d: err = %v", i, err)
		}
		if i%10 == 0 {
			continue
		}
		st, err := s.MailboxState(ctx, fmt.Sprintf("u%03d", i), "INBOX")
		if err != nil || st.UIDNext != uint32(i+1) {
			t.Errorf("state of u%03d = %+v, %v", i, st, err)
		}
	}
	if _, err := s.MailboxState(ctx, "bad", "0"); err == nil {
		t.Error("a failed write's work was committed")
	}
}

// The outbox survives closing and reopening, as it would a crash: what was
// committed is there.
func TestOutboxIsDurable(t *testing.T) {
	forEachReopenable(t, func(t *testing.T, open func() Store) {
		s := open()
		id, err := s.CommitMailbox(t.Context(), "alice", "Notes", &MailboxState{UIDValidity: 1, UIDNext: 5}, &OutboxEntry{At: t0})
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
		s = open()
		defer s.Close()
		out, err := s.Outbox(t.Context())
		if err != nil || len(out) != 1 || out[0].ID != id || out[0].Mailbox != "Notes" {
			t.Fatalf("Outbox after reopening = %+v, %v", out, err)
		}
	})
}

// Mailbox state and outbox entries are committed without an fsync
// (synchronous=NORMAL), registrations and everything else with one (FULL),
// and a batch holding both is committed with FULL.
func TestDurableWritesCommitWithFullSync(t *testing.T) {
	s := newStore(t)
	ctx := t.Context()
	mode := func(relaxed bool) int {
		t.Helper()
		var m int
		err := s.writeWith(ctx, relaxed, func(ctx context.Context, tx *sql.Tx) error {
			return tx.QueryRowContext(ctx, `PRAGMA synchronous`).Scan(&m)
		})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	if m := mode(false); m != 2 {
		t.Errorf("a durable write runs with synchronous %d; want 2 (FULL)", m)
	}
	if m := mode(true); m != 1 {
		t.Errorf("a relaxed write runs with synchronous %d; want 1 (NORMAL)", m)
	}
	if m := mode(false); m != 2 {
		t.Errorf("a durable write after a relaxed one runs with synchronous %d; want 2", m)
	}
	// Concurrent writers of both kinds: every durable one sees FULL.
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Go(func() {
			relaxed := i%3 != 0
			var m int
			err := s.writeWith(ctx, relaxed, func(ctx context.Context, tx *sql.Tx) error {
				return tx.QueryRowContext(ctx, `PRAGMA synchronous`).Scan(&m)
			})
			if err != nil || !relaxed && m != 2 {
				t.Errorf("durable write %d: synchronous %d, %v", i, m, err)
			}
		})
	}
	wg.Wait()
}

// A push owed for a mailbox never looked at is no mailbox state: the first
// look after it still only sets the baseline.
func TestOutboxEntryIsNoMailboxState(t *testing.T) {
	forEachStore(t, func(t *testing.T, s Store) {
		ctx := t.Context()
		if _, err := s.CommitMailbox(ctx, "alice", "Notes", nil, &OutboxEntry{Changed: true, At: t0}); err != nil {
			t.Fatal(err)
		}
		if st, err := s.MailboxState(ctx, "alice", "Notes"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("MailboxState = %+v, %v; want ErrNotFound", st, err)
		}
		// And state committed with a push keeps the push owed before it.
		id, err := s.CommitMailbox(ctx, "alice", "Notes", &MailboxState{UIDValidity: 3, UIDNext: 9}, &OutboxEntry{At: t0})
		if err != nil {
			t.Fatal(err)
		}
		if st, err := s.MailboxState(ctx, "alice", "Notes"); err != nil || st != (MailboxState{3, 9}) {
			t.Fatalf("MailboxState = %+v, %v", st, err)
		}
		if err := s.SetMailboxState(ctx, "alice", "Notes", MailboxState{3, 10}); err != nil {
			t.Fatal(err)
		}
		out, _ := s.Outbox(ctx)
		if len(out) != 2 || out[1].ID != id || out[0].Changed != true {
			t.Fatalf("outbox = %+v; want the change and the new mail (%d) still owed", out, id)
		}
	})
}

// Ids given after a reopen are above the ones still owed.
func TestOutboxIDsGrowAcrossReopen(t *testing.T) {
	forEachReopenable(t, func(t *testing.T, open func() Store) {
		s := open()
		a, _ := s.CommitMailbox(t.Context(), "alice", "INBOX", nil, &OutboxEntry{At: t0})
		b, _ := s.CommitMailbox(t.Context(), "bob", "INBOX", nil, &OutboxEntry{At: t0})
		s.Close()
		s = open()
		defer s.Close()
		c, err := s.CommitMailbox(t.Context(), "carol", "INBOX", nil, &OutboxEntry{At: t0})
		if err != nil || c <= max(a, b) {
			t.Fatalf("id after reopening = %d, %v; want above %d and %d", c, err, a, b)
		}
	})
}
