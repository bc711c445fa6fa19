package cluster_test

// The cluster with the push stage over the PostgreSQL store, wired as serve
// would: Owns gates the Pusher, OnOwn claims a user's outbox, OnLose
// releases it. While ownership moves, every mail is pushed exactly once.

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/xapsproxy/xapsproxy/cluster"
	"github.com/xapsproxy/xapsproxy/event"
	"github.com/xapsproxy/xapsproxy/internal/pgtest"
	"github.com/xapsproxy/xapsproxy/internal/testlog"
	"github.com/xapsproxy/xapsproxy/push"
	"github.com/xapsproxy/xapsproxy/store"
)

// countingSender answers 200 after a few milliseconds (APNs's latency, so
// that pushes are in flight while ownership moves) and counts per token.
type countingSender struct {
	mu   sync.Mutex
	sent map[string]int
	by   map[string][]string // token -> instances that sent, in order
}

// as is the Sender of instance id.
type as struct {
	*countingSender
	id string
}

func (a as) Send(ctx context.Context, n push.Notification) (push.Response, error) {
	r, err := a.countingSender.Send(ctx, n)
	if err == nil {
		a.mu.Lock()
		a.by[n.DeviceToken] = append(a.by[n.DeviceToken], a.id+"@"+time.Now().Format("05.000"))
		a.mu.Unlock()
	}
	return r, err
}

func (s *countingSender) Send(ctx context.Context, n push.Notification) (push.Response, error) {
	t := time.NewTimer(5 * time.Millisecond)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return push.Response{}, ctx.Err()
	case <-t.C:
	}
	s.mu.Lock()
	s.sent[n.DeviceToken]++
	s.mu.Unlock()
	return push.Response{StatusCode: 200}, nil
}

type instance struct {
	c      *cluster.Cluster
	p      *push.Pusher
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func startInstance(t *testing.T, url, id string, s push.Sender) *instance {
	t.Helper()
	st, err := store.OpenPostgres(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	log := testlog.New(t).With("node", id)
	in := &instance{}
	in.p = push.New(push.Options{Store: st, Sender: s, Logger: log, Owns: func(u string) bool { return in.c.Owns(u) },
		RetryBase: 10 * time.Millisecond, RetryMax: 50 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	in.cancel = cancel
	in.c = cluster.New(cluster.Options{
		Pool: st.Pool(), Users: st.Users, Period: 200 * time.Millisecond, TTL: time.Second, ID: id, Logger: log,
		OnOwn: func(u string) {
			if err := in.p.Claim(ctx, u); err != nil && ctx.Err() == nil {
				t.Errorf("Claim %s: %v", u, err)
			}
		},
		OnLose: func(ctx context.Context, u string) {
			rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			if err := in.p.Release(rctx, u); err != nil {
				t.Errorf("Release %s: %v", u, err)
			}
		},
	})
	// The Pusher outlives the cluster: OnLose at the cluster's stop
	// needs its Run.
	pctx, stopPush := context.WithCancel(context.Background())
	in.wg.Go(func() { in.p.Run(pctx) })
	in.wg.Go(func() {
		defer stopPush()
		if err := in.c.Run(ctx); err != nil {
			t.Errorf("cluster Run: %v", err)
		}
	})
	t.Cleanup(func() { in.stop(); st.Close() })
	return in
}

func (in *instance) stop() {
	in.cancel()
	in.wg.Wait()
}

func tok(i int) string { return fmt.Sprintf("%064x", i+1) }

func TestOneMailOnePushWhileOwnershipMoves(t *testing.T) {
	url := pgtest.New(t)
	st, err := store.OpenPostgres(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	const n = 200
	now := time.Now()
	users := make([]string, n)
	for i := range n {
		users[i] = fmt.Sprintf("user%d", i)
		r := store.Registration{User: users[i], DeviceToken: tok(i), AccountID: "acct", Subtopic: "com.apple.mobilemail",
			Mailboxes: []string{"INBOX"}, Version: 2, Topic: "com.apple.mail.XServer.x", Registered: now, Renewed: now}
		if err := st.Register(t.Context(), r); err != nil {
			t.Fatal(err)
		}
	}
	// Half the users have mail owed from before the start.
	for i := range n / 2 {
		if _, err := st.CommitMailbox(t.Context(), users[i], "INBOX", nil, &store.OutboxEntry{At: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	s := &countingSender{sent: map[string]int{}, by: map[string][]string{}}
	var ins [3]atomic.Pointer[instance]
	ins[0].Store(startInstance(t, url, "a", as{s, "a"}))
	ins[1].Store(startInstance(t, url, "b", as{s, "b"}))
	for deadline := time.Now().Add(10 * time.Second); ins[0].Load().c.Stats().Owned == 0 || ins[1].Load().c.Stats().Owned == 0; {
		if time.Now().After(deadline) {
			t.Fatal("a and b did not share the users")
		}
		time.Sleep(10 * time.Millisecond) // polling a condition, with a deadline
	}

	// The other half get mail while a third instance joins and the first
	// stops: each commit is notified to whoever owns the user then, as
	// its watcher would (nobody: the next owner's Claim finds it).
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := n / 2; i < n; i++ {
			id, err := st.CommitMailbox(context.Background(), users[i], "INBOX", nil, &store.OutboxEntry{At: time.Now()})
			if err != nil {
				t.Error(err)
				return
			}
			for j := range ins {
				if in := ins[j].Load(); in != nil && in.c.Owns(users[i]) {
					// One watcher commits and notifies: its instance's.
					in.p.Notify(event.Event{User: users[i], Mailbox: "INBOX", Kind: event.KindNew, ID: id})
					break
				}
			}
			time.Sleep(2 * time.Millisecond) // spread the mail over the moves; not a synchronization
		}
	})
	ins[2].Store(startInstance(t, url, "c", as{s, "c"}))
	ins[0].Load().stop()
	wg.Wait()

	deadline := time.Now().Add(10 * time.Second)
	for {
		out, err := st.Outbox(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		s.mu.Lock()
		got := len(s.sent)
		s.mu.Unlock()
		if len(out) == 0 && got == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 10 s: %d entries left in the outbox, %d of %d devices pushed", len(out), got, n)
		}
		time.Sleep(20 * time.Millisecond) // polling a condition, with a deadline
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range n {
		if c := s.sent[tok(i)]; c != 1 {
			t.Errorf("%s got %d pushes for one mail, from %v", users[i], c, s.by[tok(i)])
		}
	}
}
