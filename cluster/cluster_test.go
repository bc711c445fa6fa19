package cluster

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/xapsproxy/xapsproxy/event"
	"github.com/xapsproxy/xapsproxy/internal/pgtest"
	"github.com/xapsproxy/xapsproxy/internal/testlog"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

const (
	testPeriod = 200 * time.Millisecond
	testTTL    = time.Second
)

// timeline records every instance's OnOwn and OnLose in one order, to check
// that no user is ever owned by two instances at once from the callbacks'
// view. An OnLose is recorded when it returns.
type timeline struct {
	mu      sync.Mutex
	owner   map[string]string // user -> instance that owns it now
	overlap []string
	owns    int
	syncs   map[string][]string // instance -> users synced
	hints   map[string][]event.Hint
}

func newTimeline() *timeline {
	return &timeline{owner: map[string]string{}, syncs: map[string][]string{}, hints: map[string][]event.Hint{}}
}

func (tl *timeline) own(id, user string) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	tl.owns++
	if cur, ok := tl.owner[user]; ok {
		tl.overlap = append(tl.overlap, fmt.Sprintf("%q: OnOwn on %s while %s owns it", user, id, cur))
	}
	tl.owner[user] = id
}

func (tl *timeline) lose(id, user string) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	// No owner: the OnOwn was skipped (the stop began, or the user was
	// lost before its turn); OnLose still runs.
	if cur, ok := tl.owner[user]; ok && cur != id {
		tl.overlap = append(tl.overlap, fmt.Sprintf("%q: OnLose on %s, but %q owns it", user, id, cur))
		return
	}
	delete(tl.owner, user)
}

// killed ends the ownerships of id: a killed process watches nothing.
func (tl *timeline) killed(id string) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	for u, o := range tl.owner {
		if o == id {
			delete(tl.owner, u)
		}
	}
}

func (tl *timeline) check(t *testing.T) {
	t.Helper()
	tl.mu.Lock()
	defer tl.mu.Unlock()
	for _, o := range tl.overlap[:min(len(tl.overlap), 10)] {
		t.Error(o)
	}
	if len(tl.overlap) > 0 {
		t.Errorf("%d overlaps in %d OnOwn", len(tl.overlap), tl.owns)
	}
}

// userList is a settable Options.Users.
type userList struct{ p atomic.Pointer[[]string] }

func (l *userList) set(users []string) { l.p.Store(&users) }
func (l *userList) users(context.Context) ([]string, error) {
	return slices.Clone(*l.p.Load()), nil
}

type node struct {
	c      *Cluster
	pool   *pgxpool.Pool
	cancel context.CancelFunc
	done   chan error
}

type env struct {
	t     *testing.T
	url   string
	users userList
	tl    *timeline
	nodes []*node
	opts  func(*Options)
}

func newEnv(t *testing.T, users []string) *env {
	e := &env{t: t, url: pgtest.New(t), tl: newTimeline()}
	e.users.set(users)
	return e
}

// start runs one more instance, with a pool of its own.
func (e *env) start() *node {
	e.t.Helper()
	id := fmt.Sprintf("i%d", len(e.nodes)+1)
	cfg, err := pgxpool.ParseConfig(e.url)
	if err != nil {
		e.t.Fatal(err)
	}
	cfg.ConnConfig.RuntimeParams["application_name"] = id // for pg_stat_activity
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	n := &node{pool: pool, done: make(chan error, 1)}
	opts := Options{
		Pool: pool, Users: e.users.users, Period: testPeriod, TTL: testTTL, ID: id,
		Logger: testlog.New(e.t).With("node", id),
		OnOwn:  func(u string) { e.tl.own(id, u) },
		OnLose: func(_ context.Context, u string) { e.tl.lose(id, u) },
		OnSync: func(u string) {
			e.tl.mu.Lock()
			e.tl.syncs[id] = append(e.tl.syncs[id], u)
			e.tl.mu.Unlock()
		},
		OnHint: func(h event.Hint) {
			e.tl.mu.Lock()
			e.tl.hints[id] = append(e.tl.hints[id], h)
			e.tl.mu.Unlock()
		},
	}
	if e.opts != nil {
		e.opts(&opts)
	}
	n.c = New(opts)
	ctx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	go func() { n.done <- n.c.Run(ctx) }()
	e.nodes = append(e.nodes, n)
	e.t.Cleanup(func() { e.stopNode(n) })
	return n
}

// stopNode stops n cleanly (hand-over) and waits for Run.
func (e *env) stopNode(n *node) {
	e.t.Helper()
	if n.cancel == nil {
		return
	}
	n.cancel()
	n.cancel = nil
	select {
	case err := <-n.done:
		if err != nil {
			e.t.Errorf("Run: %v", err)
		}
	case <-time.After(15 * time.Second):
		e.t.Errorf("Run of %s did not return", n.c.ID())
	}
	n.pool.Close()
}

// kill stops n like SIGKILL: no hand-over, nothing released.
func (e *env) kill(n *node) {
	e.t.Helper()
	n.c.mu.Lock()
	n.c.abandon = true
	n.c.mu.Unlock()
	e.tl.killed(n.c.ID())
	e.stopNode(n)
}

func (e *env) live() []*node {
	var out []*node
	for _, n := range e.nodes {
		if n.cancel != nil {
			out = append(out, n)
		}
	}
	return out
}

// owners maps each user to the live instances that say they own it.
func (e *env) owners() map[string][]string {
	out := map[string][]string{}
	for _, u := range *e.users.p.Load() {
		for _, n := range e.live() {
			if n.c.Owns(u) {
				out[u] = append(out[u], n.c.ID())
			}
		}
	}
	return out
}

// waitConverged waits until every user is owned by exactly one live
// instance, its desired owner among the live ones, and the leases table
// says the same; it returns user -> owner and how long it took.
func (e *env) waitConverged(what string, timeout time.Duration) (map[string]string, time.Duration) {
	e.t.Helper()
	start := time.Now()
	var ids []string
	for _, n := range e.live() {
		ids = append(ids, n.c.ID())
	}
	users := *e.users.p.Load()
	var last string
	for deadline := start.Add(timeout); ; {
		got, problem := map[string]string{}, ""
		for u, os := range e.owners() {
			if len(os) == 1 {
				got[u] = os[0]
			} else {
				problem = fmt.Sprintf("%q owned by %v", u, os)
			}
		}
		if problem == "" && len(got) != len(users) {
			problem = fmt.Sprintf("%d of %d users owned", len(got), len(users))
		}
		for u, o := range got {
			if want := desired(u, ids); o != want && problem == "" {
				problem = fmt.Sprintf("%q owned by %s, desired %s", u, o, want)
			}
		}
		if problem == "" {
			if db := e.leases(); !maps.Equal(db, got) {
				problem = fmt.Sprintf("the leases table (%d rows) differs from Owns", len(db))
			} else {
				return got, time.Since(start)
			}
		}
		last = problem
		if time.Now().After(deadline) {
			e.t.Fatalf("%s: not converged after %v: %s", what, timeout, last)
		}
		time.Sleep(20 * time.Millisecond) // polling a condition, with a deadline
	}
}

// leases reads the leases table: user -> owner, unexpired by the
// database's clock.
func (e *env) leases() map[string]string {
	e.t.Helper()
	pool := e.live()[0].pool
	rows, err := pool.Query(context.Background(), "SELECT user_name, owner FROM xapsproxy_leases WHERE expires > now()")
	if err != nil {
		e.t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var n []byte
		var o string
		if err := rows.Scan(&n, &o); err != nil {
			e.t.Fatal(err)
		}
		out[string(n)] = o
	}
	if err := rows.Err(); err != nil {
		e.t.Fatal(err)
	}
	return out
}

func spread(owner map[string]string) map[string]int {
	c := map[string]int{}
	for _, o := range owner {
		c[o]++
	}
	return c
}

func TestAccountsShareAndMove(t *testing.T) {
	var users []string
	for i := range 1000 {
		users = append(users, fmt.Sprintf("user%04d@example.com", i))
	}
	e := newEnv(t, users)
	for range 3 {
		e.start()
	}
	owner, took := e.waitConverged("3 instances", 10*time.Second)
	counts := spread(owner)
	t.Logf("1000 accounts over 3 instances after %v: %v", took.Round(time.Millisecond), counts)
	for id, c := range counts {
		if c < 250 || c > 420 {
			t.Errorf("%s owns %d of 1000, want roughly a third", id, c)
		}
	}

	// A fourth joins: about a quarter move, all to it.
	n4 := e.start()
	owner4, took := e.waitConverged("4 instances", 10*time.Second)
	moved := 0
	for u, o := range owner4 {
		if o != owner[u] {
			moved++
			if o != n4.c.ID() {
				t.Errorf("%q moved from %s to %s, not to the newcomer", u, owner[u], o)
			}
		}
	}
	t.Logf("a 4th instance took %d of 1000 accounts after %v: %v", moved, took.Round(time.Millisecond), spread(owner4))
	if moved < 170 || moved > 330 {
		t.Errorf("%d accounts moved to the 4th instance, want about 250", moved)
	}

	// One stops cleanly: its accounts are taken over at once.
	e.stopNode(e.nodes[0])
	owner, took = e.waitConverged("after a stop", 10*time.Second)
	t.Logf("after a clean stop, taken over in %v: %v", took.Round(time.Millisecond), spread(owner))
	if took > testTTL {
		t.Errorf("the accounts of an instance that stopped took %v to be taken over; a hand-over should not wait for the TTL", took)
	}

	// One is killed: taken over within TTL + Period (and the poll).
	killedAt := time.Now()
	e.kill(e.nodes[1])
	owner, _ = e.waitConverged("after a kill", 5*time.Second)
	took = time.Since(killedAt)
	t.Logf("after a kill, taken over in %v: %v", took.Round(time.Millisecond), spread(owner))
	if took > testTTL+testPeriod+500*time.Millisecond {
		t.Errorf("the accounts of a killed instance took %v to be taken over, want within TTL+Period (%v)", took, testTTL+testPeriod)
	}
	e.tl.check(t)
	if st := e.nodes[2].c.Stats(); st.Instances != 2 || st.Owned == 0 {
		t.Errorf("Stats of a survivor: %+v", st)
	}
}

// An instance whose database goes away gives its accounts up by its local
// deadline, before the others may take them: the callbacks never overlap.
func TestDatabaseGoneGivesAccountsUp(t *testing.T) {
	var users []string
	for i := range 200 {
		users = append(users, fmt.Sprintf("u%d", i))
	}
	e := newEnv(t, users)
	a, _ := e.start(), e.start()
	e.waitConverged("2 instances", 10*time.Second)
	before := len(a.c.Owned())
	// Every statement of a fails from now on, its listener included.
	a.pool.Close()
	// Owns turns false at each lease's local deadline; then OnLose runs.
	eventually(t, "a to give its accounts up", 5*time.Second, func() bool {
		return len(a.c.Owned()) == 0 && a.c.Stats().Lost >= uint64(before)
	})
	a.cancel() // Run returns; its hand-over fails on the closed pool
	<-a.done
	a.cancel = nil
	e.waitConverged("the other alone", 5*time.Second)
	if st := a.c.Stats(); st.Lost < uint64(before) {
		t.Errorf("Stats.Lost = %d, want at least the %d accounts a owned", st.Lost, before)
	}
	e.tl.check(t)
}

func TestPublish(t *testing.T) {
	hostile := "q\"u'o\\te\nnew line\x00" + strings.Repeat("é", 5000) // 10 KB
	e := newEnv(t, []string{"alice", "bob", hostile})
	e.start()
	e.start()
	owner, _ := e.waitConverged("2 instances", 10*time.Second)
	other := func(user string) (own, not *node) {
		for _, n := range e.nodes {
			if n.c.ID() == owner[user] {
				own = n
			} else {
				not = n
			}
		}
		return own, not
	}
	ctx := context.Background()
	for _, u := range []string{"alice", hostile} {
		own, not := other(u)
		if err := not.c.PublishRegistration(ctx, u); err != nil {
			t.Fatalf("PublishRegistration: %v", err)
		}
		eventually(t, "OnSync on the owner", 5*time.Second, func() bool {
			e.tl.mu.Lock()
			defer e.tl.mu.Unlock()
			return slices.Contains(e.tl.syncs[own.c.ID()], u)
		})
		h := event.Hint{User: u, Mailbox: "Dossier \"x\"\n" + u[:min(len(u), 100)], What: event.Arrived, UIDValidity: 7, UIDNext: 42}
		if err := not.c.PublishHint(ctx, h); err != nil {
			t.Fatalf("PublishHint: %v", err)
		}
		eventually(t, "OnHint on the owner", 5*time.Second, func() bool {
			e.tl.mu.Lock()
			defer e.tl.mu.Unlock()
			return slices.Contains(e.tl.hints[own.c.ID()], h)
		})
		e.tl.mu.Lock()
		if slices.Contains(e.tl.syncs[not.c.ID()], u) || slices.Contains(e.tl.hints[not.c.ID()], h) {
			t.Errorf("the instance that does not own %.20q got its sync or hint", u)
		}
		e.tl.mu.Unlock()
	}
	err := e.nodes[0].c.PublishHint(ctx, event.Hint{User: "alice", Mailbox: strings.Repeat("m", 10000)})
	if !errors.Is(err, ErrTooLarge) {
		t.Errorf("a hint with a 10 KB mailbox: %v, want ErrTooLarge", err)
	}

	// A new account is claimed on the notification, not at the next
	// period (a minute here), the hostile name (too long to travel in
	// the notification) too.
	e2 := newEnv(t, []string{"alice"})
	e2.opts = func(o *Options) { o.Period, o.TTL = time.Minute, 3*time.Minute }
	e2.start()
	e2.start()
	e2.waitConverged("2 slow instances", 10*time.Second)
	eventually(t, "both slow instances to see each other", 5*time.Second, func() bool {
		return e2.nodes[0].c.Stats().Instances == 2 && e2.nodes[1].c.Stats().Instances == 2
	})
	e2.users.set([]string{"alice", "carol", hostile})
	for _, u := range []string{"carol", hostile} {
		if err := e2.nodes[0].c.PublishRegistration(ctx, u); err != nil {
			t.Fatal(err)
		}
	}
	e2.waitConverged("new accounts claimed", 5*time.Second)
}

// A listener whose connection is cut reconnects, syncs every owned user
// again (notifications may have been missed) and hears the others again.
func TestListenerReconnects(t *testing.T) {
	e := newEnv(t, []string{"alice", "bob", "carol", "dave", "erin", "frank"})
	a, b := e.start(), e.start()
	e.waitConverged("2 instances", 10*time.Second)
	mine := a.c.Owned()
	if len(mine) == 0 {
		t.Fatal("a owns nothing; pick other names")
	}
	killListener(t, b, "i1")
	eventually(t, "a to reconnect and sync its users", 10*time.Second, func() bool {
		e.tl.mu.Lock()
		defer e.tl.mu.Unlock()
		for _, u := range mine {
			if !slices.Contains(e.tl.syncs["i1"], u) {
				return false
			}
		}
		return a.c.Stats().Reconnects == 1
	})
	h := event.Hint{User: mine[0], Mailbox: "INBOX", What: event.Flags}
	if err := b.c.PublishHint(t.Context(), h); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a hint through the new connection", 5*time.Second, func() bool {
		e.tl.mu.Lock()
		defer e.tl.mu.Unlock()
		return slices.Contains(e.tl.hints["i1"], h)
	})
	e.tl.check(t)
}

// killListener has the server end the LISTEN connection of instance id,
// through n's pool.
func killListener(t *testing.T, n *node, id string) {
	t.Helper()
	var killed int
	err := n.pool.QueryRow(t.Context(), `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE application_name = $1 AND query LIKE 'LISTEN%'`, id).Scan(&killed)
	if err != nil || killed != 1 {
		t.Fatalf("terminating %s's listener: %d terminated, %v", id, killed, err)
	}
}

// With OnResync, a reconnected listener has the owner look at every
// account it owns (hints published meanwhile were missed), and OnSync is
// not called for them.
func TestListenerReconnectsResync(t *testing.T) {
	e := newEnv(t, []string{"alice", "bob", "carol", "dave"})
	var mu sync.Mutex
	var resynced []string
	e.opts = func(o *Options) {
		o.OnResync = func(u string) {
			mu.Lock()
			resynced = append(resynced, u)
			mu.Unlock()
		}
	}
	a, b := e.start(), e.start()
	e.waitConverged("2 instances", 10*time.Second)
	mine := a.c.Owned()
	if len(mine) == 0 {
		t.Fatal("a owns nothing; pick other names")
	}
	killListener(t, b, "i1")
	eventually(t, "a to reconnect and look at its accounts again", 10*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, u := range mine {
			if !slices.Contains(resynced, u) {
				return false
			}
		}
		return true
	})
	e.tl.mu.Lock()
	defer e.tl.mu.Unlock()
	if len(e.tl.syncs["i1"]) != 0 {
		t.Errorf("OnSync called for %v with OnResync set", e.tl.syncs["i1"])
	}
}

func eventually(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(timeout); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond) // polling a condition, with a deadline
	}
}

// A slow OnLose (pushes to APNs in flight) holds up neither the heartbeat
// nor the renewals: a lease being handed over stays held until its OnLose
// returned, so the next owner starts only after it, and the slow instance
// stays live all along.
func TestSlowOnLoseKeepsLeasesAndHeartbeat(t *testing.T) {
	var users []string
	for i := range 40 {
		users = append(users, fmt.Sprintf("slow%02d", i))
	}
	e := newEnv(t, users)
	const slow = 3 * testTTL
	var slowing atomic.Bool
	e.opts = func(o *Options) {
		if o.ID != "i1" {
			return
		}
		lose := o.OnLose
		o.OnLose = func(ctx context.Context, u string) {
			if slowing.Load() {
				tm := time.NewTimer(slow) // a push in flight, answered late
				select {
				case <-tm.C:
				case <-ctx.Done():
				}
				tm.Stop()
			}
			lose(ctx, u)
		}
	}
	a := e.start()
	e.waitConverged("1 instance", 10*time.Second)
	slowing.Store(true)
	joined := time.Now()
	b := e.start()
	want := 0
	for _, u := range users {
		if desired(u, []string{"i1", "i2"}) == "i2" {
			want++
		}
	}
	if want == 0 || want == len(users) {
		t.Fatalf("%d of %d users desired by i2; pick other names", want, len(users))
	}
	seen := false
	eventually(t, "b to own its share", slow+10*time.Second, func() bool {
		for u, os := range e.owners() {
			if len(os) > 1 {
				t.Fatalf("%q owned by %v", u, os)
			}
		}
		if sa, sb := a.c.Stats(), b.c.Stats(); sb.Instances == 2 && sa.Instances == 2 {
			seen = true
		} else if seen {
			t.Fatalf("after %v: a sees %d instances, b %d: a heartbeat lapsed while OnLose ran", time.Since(joined), sa.Instances, sb.Instances)
		}
		return len(b.c.Owned()) == want
	})
	took := time.Since(joined)
	e.waitConverged("2 instances", 5*time.Second)
	t.Logf("%d of %d accounts moved after %v, OnLose taking %v", want, len(users), took.Round(time.Millisecond), slow)
	if took < slow {
		t.Errorf("the accounts moved after %v, before their OnLose (%v) returned", took, slow)
	}
	if st := a.c.Stats(); st.Lost != 0 || st.HandedOver != uint64(want) || st.Instances != 2 {
		t.Errorf("Stats of the slow instance: %+v, want %d handed over, none lost", st, want)
	}
	e.tl.check(t)
}
