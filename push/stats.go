package push

import (
	"context"
	"log/slog"
	"maps"
	"strconv"
	"sync"

	"github.com/xapsproxy/xapsproxy/store"
)

// Stats is what the Pusher has done, for /metrics and status reports.
type Stats struct {
	// Answers counts APNs's answers by status and reason ("200",
	// "400 DeviceTokenNotForTopic", "403 BadCertificate"); pushes that got
	// no answer count under "error".
	Answers map[string]uint64
	// Held is why every push is held back: "outage" (APNs does not
	// answer), "credential" (APNs refused the certificate or token), or ""
	// when pushes flow.
	Held string
	// Pending is as Pending reports.
	Pending int
	// Workers is the goroutines sending pushes or waiting for one; they
	// exit a few seconds after the last push.
	Workers int
}

// answerCounts is the Answers of Stats, updated by the workers.
type answerCounts struct {
	mu sync.Mutex
	n  map[string]uint64
}

func (c *answerCounts) add(res Result) {
	key := "error"
	if res.Err == nil {
		key = strconv.Itoa(res.Response.StatusCode)
		if res.Response.Reason != "" {
			key += " " + res.Response.Reason
		}
	}
	c.mu.Lock()
	if c.n == nil {
		c.n = map[string]uint64{}
	}
	if _, ok := c.n[key]; ok || len(c.n) < maxAnswerKinds {
		c.n[key]++
	} else {
		c.n["other"]++
	}
	c.mu.Unlock()
}

// maxAnswerKinds bounds the distinct answers counted, whatever a
// misbehaving endpoint sends as reasons.
const maxAnswerKinds = 64

// Stats returns a snapshot of the Pusher's statistics.
func (p *Pusher) Stats() Stats {
	p.answers.mu.Lock()
	answers := maps.Clone(p.answers.n)
	p.answers.mu.Unlock()
	held := ""
	if c := gateCause(p.held.Load()); c != gateOpen {
		held = c.String()
	}
	return Stats{Answers: answers, Held: held, Pending: p.Pending(), Workers: int(p.workers.Load())}
}

// regLog logs about one registration. Unlike a Logger.With, it costs
// nothing when the level is off: at 10 000 pushes a second, With's
// formatting of the three attributes showed in profiles.
type regLog struct {
	l                    *slog.Logger
	user, token, account string
}

func (r regLog) log(ctx context.Context, level slog.Level, msg string, args ...any) {
	if !r.l.Enabled(ctx, level) {
		return
	}
	r.l.Log(ctx, level, msg, append([]any{"user", r.user, "token", store.ShortToken(r.token), "account", r.account}, args...)...)
}
