package push

import (
	"container/list"
	"context"
	"slices"
	"sync"
	"time"

	"github.com/xapsproxy/xapsproxy/store"
)

// What a recent push was for (RecentPush.Kind).
const (
	PushNewMail = "new mail" // new mail in one of its mailboxes (and maybe changes)
	PushChanges = "changes"  // flag changes or expunges alone
	PushRetry   = "retry"    // an earlier attempt got no answer or a 429/5xx/403
	PushTest    = "test"     // TestPush or PushUser
)

// Bounds of the recent pushes kept in memory.
const (
	RecentPerUser = 10     // pushes per user
	RecentUsers   = 10_000 // users, the most recently pushed
)

// RecentPush is one push as the status page shows it. It holds the device
// token's short form only.
type RecentPush struct {
	At        time.Time
	Token     string // store.ShortToken of the device token
	AccountID string
	Mailboxes []string // registered names the push named (none with OmitMailboxes)
	Kind      string   // PushNewMail, PushChanges, PushRetry or PushTest
	Status    int      // Apple's HTTP status; 0 when Error is set
	Reason    string   // Apple's reason, e.g. "BadDeviceToken"
	APNsID    string
	Error     string // no answer: the transport error
	Action    Action
}

// recentLog keeps the last pushes of the users pushed to most recently. The
// workers add to it and the status page reads it, under its mutex; a user
// past the bound is forgotten whole, least recently pushed first.
type recentLog struct {
	perUser, users int

	mu    sync.Mutex
	byKey map[string]*list.Element // user -> element of order, holding *recentUser
	order list.List                // front: pushed to most recently
}

type recentUser struct {
	user   string
	pushes []RecentPush // oldest first, at most perUser
}

func newRecentLog(perUser, users int) *recentLog {
	return &recentLog{perUser: perUser, users: users, byKey: map[string]*list.Element{}}
}

func (l *recentLog) add(user string, p RecentPush) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.byKey[user]
	if e == nil {
		e = l.order.PushFront(&recentUser{user: user})
		l.byKey[user] = e
		for l.order.Len() > l.users {
			last := l.order.Back()
			l.order.Remove(last)
			delete(l.byKey, last.Value.(*recentUser).user)
		}
	} else {
		l.order.MoveToFront(e)
	}
	u := e.Value.(*recentUser)
	if len(u.pushes) == l.perUser {
		u.pushes = slices.Delete(u.pushes, 0, 1)
	}
	u.pushes = append(u.pushes, p)
}

// get returns user's pushes, newest first.
func (l *recentLog) get(user string) []RecentPush {
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.byKey[user]
	if e == nil {
		return nil
	}
	out := slices.Clone(e.Value.(*recentUser).pushes)
	slices.Reverse(out)
	return out
}

// len is how many users have pushes kept.
func (l *recentLog) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.order.Len()
}

func (l *recentLog) record(at time.Time, res Result, n Notification, kind string) {
	p := RecentPush{
		At: at, Token: store.ShortToken(res.DeviceToken), AccountID: res.AccountID,
		Mailboxes: slices.Clone(n.Mailboxes), Kind: kind, Action: res.Action,
	}
	if res.Err != nil {
		p.Error = res.Err.Error()
	} else {
		p.Status, p.Reason, p.APNsID = res.Response.StatusCode, res.Response.Reason, res.Response.APNsID
	}
	l.add(res.User, p)
}

// RecentPushes returns the last pushes to user's devices (at most
// RecentPerUser, newest first) since the Pusher was made, or none if user
// was not among the RecentUsers pushed to last.
func (p *Pusher) RecentPushes(user string) []RecentPush { return p.recent.get(user) }

// TestPush sends one push now to every registration of user, as the
// status page's button asks: through the Pusher's sender, recorded in the
// store and among the recent pushes, dead tokens pruned, as PushUser does.
func (p *Pusher) TestPush(ctx context.Context, user string) ([]Result, error) {
	return p.PushUser(ctx, user)
}
