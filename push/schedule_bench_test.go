package push_test

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/xapsproxy/xapsproxy/event"
	"github.com/xapsproxy/xapsproxy/push"
	"github.com/xapsproxy/xapsproxy/store"
)

// userStore is memStore with registrations found by user in constant
// time, so that the benchmark measures the scheduler, not the fake.
type userStore struct {
	*memStore
	byUser map[string][]store.Registration
}

func (s *userStore) Registrations(_ context.Context, user string) ([]store.Registration, error) {
	return s.byUser[user], nil
}

// BenchmarkDrain queues one new-mail event for each of n accounts, then
// times the scheduler sending them all to an instant sender: pushes per
// second should not fall as the queue grows (compare the sizes, run
// together: go test -run XXX -bench Drain ./push).
func BenchmarkDrain(b *testing.B) {
	for _, n := range []int{2000, 8000, 16000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			var total time.Duration
			for range b.N {
				st := &userStore{memStore: newMemStore(), byUser: map[string][]store.Registration{}}
				for i := range n {
					r := reg(fmt.Sprintf("user%d", i), i, "acct")
					r.DeviceToken = fmt.Sprintf("%064x", i)
					st.byUser[r.User] = []store.Registration{r}
				}
				p := push.New(push.Options{Store: st, Sender: &funcSender{}, Logger: slog.New(slog.DiscardHandler)})
				for i := range n {
					p.Notify(event.Event{User: fmt.Sprintf("user%d", i), Mailbox: "INBOX", Kind: event.KindNew})
				}
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan error, 1)
				start := time.Now()
				go func() { done <- p.Run(ctx) }()
				for p.Pending() > 0 {
					time.Sleep(time.Millisecond) // polling for the end, outside the measured work
				}
				total += time.Since(start)
				cancel()
				<-done
			}
			b.ReportMetric(float64(n*b.N)/total.Seconds(), "pushes/s")
		})
	}
}
