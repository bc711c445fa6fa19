package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/xapsproxy/xapsproxy/internal/pgtest"
)

// Two instances (two pools) registering new devices of one user at once
// together stop at MaxRegistrationsPerUser: the limit is checked under a
// lock, not read and then written.
func TestPostgresDeviceLimitAcrossInstances(t *testing.T) {
	t.Parallel()
	url := pgtest.New(t)
	a, b := openPostgres(t, url), openPostgres(t, url)
	ctx := t.Context()
	const free = 10
	for i := range MaxRegistrationsPerUser - free {
		mustRegister(t, a, reg("alice", fmt.Sprintf("%064x", i)))
	}
	const tries = 40 // per instance
	var wg sync.WaitGroup
	errs := make(chan error, 2*tries)
	for i := range 2 * tries {
		s := a
		if i%2 == 1 {
			s = b
		}
		wg.Go(func() { errs <- s.Register(ctx, reg("alice", fmt.Sprintf("%064x", 1000+i))) })
	}
	wg.Wait()
	close(errs)
	var ok, limited int
	for err := range errs {
		switch {
		case err == nil:
			ok++
		case errors.Is(err, ErrLimit):
			limited++
		default:
			t.Errorf("Register: %v", err)
		}
	}
	if ok != free || limited != 2*tries-free {
		t.Errorf("%d registered, %d refused; want %d and %d", ok, limited, free, 2*tries-free)
	}
	if got := registrations(t, b, "alice"); len(got) != MaxRegistrationsPerUser {
		t.Errorf("alice has %d devices; want %d", len(got), MaxRegistrationsPerUser)
	}
}

// Two instances committing pushes for the same mailboxes at once leave one
// entry per user, mailbox and kind: the one with the highest id given, and
// ids are never given twice. An answer for a replaced id, from the other
// instance, removes nothing.
func TestPostgresOutboxAcrossInstances(t *testing.T) {
	t.Parallel()
	url := pgtest.New(t)
	stores := []*Postgres{openPostgres(t, url), openPostgres(t, url)}
	ctx := t.Context()
	type key struct {
		mailbox string
		changed bool
	}
	const rounds = 25
	var (
		mu  sync.Mutex
		ids = map[key][]int64{}
		wg  sync.WaitGroup
	)
	for w := range 8 {
		s := stores[w%2]
		wg.Go(func() {
			for i := range rounds {
				k := key{mailbox: []string{"INBOX", "Notes"}[i%2], changed: (i/2)%2 == 1}
				st := &MailboxState{UIDValidity: 1, UIDNext: uint32(i + 1)}
				id, err := s.CommitMailbox(ctx, "alice", k.mailbox, st, &OutboxEntry{Changed: k.changed, At: t0})
				if err != nil {
					t.Errorf("CommitMailbox: %v", err)
					return
				}
				mu.Lock()
				ids[k] = append(ids[k], id)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	seen := map[int64]bool{}
	for _, l := range ids {
		for _, id := range l {
			if seen[id] {
				t.Fatalf("id %d given twice", id)
			}
			seen[id] = true
		}
	}
	out, err := stores[1].Outbox(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != len(ids) {
		t.Fatalf("outbox = %+v; want one entry for each of %d keys", out, len(ids))
	}
	for _, e := range out {
		l := ids[key{e.Mailbox, e.Changed}]
		if e.ID != maxOf(l) {
			t.Errorf("entry %+v left owed; want the highest id given, %d", e, maxOf(l))
		}
		// Another instance answers an older push of the same key.
		older := e
		older.ID = minOf(l)
		if err := stores[0].FinishPushes(ctx, nil, []OutboxEntry{older}); err != nil {
			t.Fatal(err)
		}
	}
	if again, err := stores[1].Outbox(ctx); err != nil || len(again) != len(out) {
		t.Fatalf("outbox after answers for replaced ids = %+v, %v; want %d entries", again, err, len(out))
	}
	if err := stores[0].FinishPushes(ctx, nil, out); err != nil {
		t.Fatal(err)
	}
	if again, err := stores[1].Outbox(ctx); err != nil || len(again) != 0 {
		t.Fatalf("outbox after answering every entry = %+v, %v", again, err)
	}
}

func maxOf(l []int64) int64 {
	m := l[0]
	for _, v := range l {
		m = max(m, v)
	}
	return m
}

func minOf(l []int64) int64 {
	m := l[0]
	for _, v := range l {
		m = min(m, v)
	}
	return m
}

// Opening again migrates nothing and keeps the data, with outbox ids above
// those given before; a database of a newer schema is refused.
func TestPostgresMigrations(t *testing.T) {
	t.Parallel()
	url := pgtest.New(t)
	ctx := t.Context()
	s := openPostgres(t, url)
	mustRegister(t, s, reg("alice", tokenA))
	before, err := s.CommitMailbox(ctx, "alice", "INBOX", nil, &OutboxEntry{At: t0})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()

	again := openPostgres(t, url)
	if got := registrations(t, again, "alice"); len(got) != 1 {
		t.Fatalf("registrations after reopening = %+v", got)
	}
	if v := schemaVersion(t, again); v != pgSchemaVersion() {
		t.Fatalf("version = %d; want %d", v, pgSchemaVersion())
	}
	if id, err := again.CommitMailbox(ctx, "bob", "INBOX", nil, &OutboxEntry{At: t0}); err != nil || id <= before {
		t.Fatalf("id after reopening = %d, %v; want above %d", id, err, before)
	}

	newer := pgSchemaVersion() + 1
	if _, err := again.Pool().Exec(ctx, `UPDATE xapsproxy_schema SET version = $1`, newer); err != nil {
		t.Fatal(err)
	}
	_, err = OpenPostgres(ctx, url)
	if !errors.Is(err, errNewerSchema) || !strings.Contains(err.Error(), fmt.Sprint(newer)) {
		t.Fatalf("OpenPostgres on schema %d = %v; want errNewerSchema naming it", newer, err)
	}
	if v := schemaVersion(t, again); v != newer {
		t.Fatalf("refused open changed the version to %d", v)
	}
}

func schemaVersion(t *testing.T, s *Postgres) int {
	t.Helper()
	var v int
	if err := s.Pool().QueryRow(t.Context(), `SELECT version FROM xapsproxy_schema`).Scan(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

// Instances starting at once on a fresh database all open it: the
// migration runs once, under the advisory lock.
func TestPostgresOpenAtOnce(t *testing.T) {
	t.Parallel()
	url := pgtest.New(t)
	const n = 4
	stores := make([]*Postgres, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { stores[i], errs[i] = OpenPostgres(t.Context(), url) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("OpenPostgres #%d: %v", i, err)
			continue
		}
		defer stores[i].Close()
	}
	if t.Failed() {
		return
	}
	mustRegister(t, stores[0], reg("alice", tokenA))
	if got := registrations(t, stores[n-1], "alice"); len(got) != 1 {
		t.Fatalf("registrations seen by another instance = %+v", got)
	}
	if v := schemaVersion(t, stores[1]); v != pgSchemaVersion() {
		t.Fatalf("version = %d", v)
	}
}

// No error of OpenPostgres holds the URL's password, whatever failed.
func TestPostgresErrorHidesPassword(t *testing.T) {
	t.Parallel()
	const pw = "s3cret-Pa55"
	good := pgtest.New(t) // postgres://xapsproxy@127.0.0.1:PORT/NAME?sslmode=disable
	wrongDB := strings.Replace(good, "/t", "/missing_t", 1)
	for _, url := range []string{
		"postgres://xapsproxy:" + pw + "@127.0.0.1:1/x?sslmode=disable&connect_timeout=5", // nothing listens
		strings.Replace(wrongDB, "xapsproxy@", "xapsproxy:"+pw+"@", 1),                    // no such database
		"postgres://xapsproxy:" + pw + "@127.0.0.1:notaport/x",                            // unparsable
		"postgres://xapsproxy@127.0.0.1:1/x?password=" + pw + "&sslmode=disable",          // password parameter
		"host=127.0.0.1 port=1 user=xapsproxy password=" + pw + " sslmode=disable",        // key=value
		"host=127.0.0.1 port=1 password='" + pw + "' sslmode=bogus",                       // unparsable key=value
	} {
		_, err := OpenPostgres(t.Context(), url)
		if err == nil {
			t.Errorf("OpenPostgres succeeded with %s", url)
			continue
		}
		if strings.Contains(err.Error(), pw) {
			t.Errorf("error holds the password: %v", err)
		}
		if !strings.HasPrefix(err.Error(), "store: open postgres") {
			t.Errorf("error without context: %v", err)
		}
	}
}

// PingWrite fails while a lock blocks writes (within its context's time)
// and on a database whose transactions are read-only; it writes nothing.
func TestPostgresPingWrite(t *testing.T) {
	t.Parallel()
	url := pgtest.New(t)
	ctx := t.Context()
	s := openPostgres(t, url)
	if err := s.PingWrite(ctx); err != nil {
		t.Fatalf("PingWrite = %v", err)
	}
	other, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close(context.WithoutCancel(ctx))
	tx, err := other.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `LOCK TABLE mailbox_state IN EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	err = s.PingWrite(short)
	cancel()
	if err == nil {
		t.Fatal("PingWrite succeeded while a lock blocked writes")
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.PingWrite(ctx); err != nil {
		t.Fatalf("PingWrite after the lock was released = %v", err)
	}
	if c, err := s.Counts(ctx); err != nil || c != (Counts{}) {
		t.Fatalf("Counts after PingWrite = %+v, %v; want nothing written", c, err)
	}

	var db string
	if err := other.QueryRow(ctx, `SELECT current_database()`).Scan(&db); err != nil {
		t.Fatal(err)
	}
	if _, err := other.Exec(ctx, `ALTER DATABASE `+pgx.Identifier{db}.Sanitize()+` SET default_transaction_read_only = on`); err != nil {
		t.Fatal(err)
	}
	ro := openPostgres(t, url) // new connections see the setting; opening only reads
	if err := ro.PingWrite(ctx); err == nil || !strings.Contains(err.Error(), "read-only") {
		t.Fatalf("PingWrite on a read-only database = %v", err)
	}
	if err := ro.Register(ctx, reg("alice", tokenA)); err == nil {
		t.Fatal("Register succeeded on a read-only database (PingWrite's premise)")
	}
}

// While the server is down the store's calls fail (Ping, PingWrite, a
// write), within their contexts; once it is back the same store works
// again, with what was committed before.
func TestPostgresServerGoneAndBack(t *testing.T) {
	t.Parallel()
	srv := pgtest.Start(t)
	s := openPostgres(t, srv.New(t))
	ctx := t.Context()
	mustRegister(t, s, reg("alice", tokenA))
	srv.Stop(t)
	short, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := s.Ping(short); err == nil {
		t.Error("Ping succeeded with the server down")
	}
	if err := s.PingWrite(short); err == nil {
		t.Error("PingWrite succeeded with the server down")
	}
	if err := s.Register(short, reg("alice", tokenB)); err == nil || !strings.HasPrefix(err.Error(), "store: register: ") {
		t.Errorf("Register with the server down = %v", err)
	}
	srv.Restart(t)
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("Ping after restart: %v", err)
	}
	mustRegister(t, s, reg("alice", tokenB))
	if got := registrations(t, s, "alice"); len(got) != 2 {
		t.Fatalf("registrations after restart = %+v", got)
	}
}
