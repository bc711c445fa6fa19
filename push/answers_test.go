package push_test

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xapsproxy/xapsproxy/event"
	"github.com/xapsproxy/xapsproxy/push"
	"github.com/xapsproxy/xapsproxy/store"
)

// logLines is a logger for tests that asserts on what was logged; it also
// writes to the test's output.
type logLines struct {
	mu  sync.Mutex
	buf bytes.Buffer
	out slog.Handler
}

func newLogLines(t *testing.T) (*logLines, *slog.Logger) {
	l := &logLines{}
	h := slog.NewTextHandler(&lockedWriter{l: l, t: t}, &slog.HandlerOptions{Level: slog.LevelDebug})
	return l, slog.New(h)
}

type lockedWriter struct {
	l *logLines
	t *testing.T
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.l.mu.Lock()
	defer w.l.mu.Unlock()
	w.l.buf.Write(p)
	return w.t.Output().Write(p)
}

// count is how many lines contain every one of parts.
func (l *logLines) count(parts ...string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for line := range strings.Lines(l.buf.String()) {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			n++
		}
	}
	return n
}

// answered counts the requests for each token.
func answered(reqs []apnsRequest) map[string]int {
	n := map[string]int{}
	for _, r := range reqs {
		n[r.Token]++
	}
	return n
}

type apnsRequest = struct {
	Token string
}

func requestTokens(e *apnsEnv) []apnsRequest {
	var out []apnsRequest
	for _, r := range e.fake.Requests() {
		out = append(out, apnsRequest{r.Token})
	}
	return out
}

// recheck is short, so that the fake clock stays close enough to the real
// one for the fake APNs's check of apns-expiration.
const recheck = 10 * time.Second

// gatedPusher sends one push at a time (so the order of answers is the
// test's), on a fake clock.
func gatedPusher(t *testing.T, e *apnsEnv, st store.Store, clk *fakeClock, log *slog.Logger) *push.Pusher {
	return push.New(push.Options{
		Store: st, Sender: e.sender, Logger: log, Topic: e.creds.Topic, Clock: clk,
		MaxConcurrent: 1, RetryBase: time.Second, RetryMax: time.Minute, CredentialRecheck: recheck,
	})
}

func fiveUsers() []store.Registration {
	var regs []store.Registration
	for i := range 5 {
		regs = append(regs, reg(fmt.Sprintf("user%d", i), i+1, fmt.Sprintf("acct-%d", i)))
	}
	return regs
}

func notifyAll(p *push.Pusher, regs []store.Registration) {
	for _, r := range regs {
		p.Notify(event.Event{User: r.User, Mailbox: "INBOX", Kind: event.KindNew})
	}
}

// 403: the credential is refused. Every push is held, one error says what
// to fix, the credential is tried again by one push per CredentialRecheck,
// and once APNs takes it every push held goes at once. Nothing is pruned.
func TestForbiddenHoldsEveryPushAndRechecksTheCredential(t *testing.T) {
	e := newAPNsEnv(t)
	regs := fiveUsers()
	st := newMemStore(regs...)
	e.fake.SetDefault(403, "BadCertificate")
	clk := newFakeClock()
	lines, log := newLogLines(t)
	p := gatedPusher(t, e, st, clk, log)
	startRun(t, p)

	notifyAll(p, regs)
	start := clk.Now()
	clk.waitArmed(t, start.Add(recheck))
	if n := len(e.fake.Requests()); n != 1 {
		t.Fatalf("%d requests after the first 403; want 1, the others held", n)
	}
	if s := p.Stats(); s.Held != "credential" || s.Answers["403 BadCertificate"] != 1 {
		t.Fatalf("stats = %+v; want held for the credential, one 403 counted", s)
	}

	// The recheck: one push, refused again; the next recheck is a minute on.
	clk.Advance(recheck)
	clk.waitArmed(t, start.Add(2*recheck))
	if n := len(e.fake.Requests()); n != 2 {
		t.Fatalf("%d requests after the first recheck; want 2", n)
	}

	// The operator fixes the certificate: the next recheck lets all through.
	e.fake.SetDefault(200, "")
	clk.Advance(recheck)
	waitFor(t, 5*time.Second, "every held push", func() bool { return len(e.fake.Requests()) == 2+len(regs) })
	waitIdle(t, p)
	for _, r := range regs {
		if got := st.results(r.DeviceToken); got[len(got)-1] != "200" || count(got, "200") != 1 {
			t.Errorf("%s's outcomes = %q; want exactly one 200, last", r.User, got)
		}
	}
	for _, r := range regs {
		if !st.has(r.User, r.DeviceToken) {
			t.Errorf("registration of %s deleted after 403", r.User)
		}
	}
	if n := lines.count("APNs refused the credential", "fix="); n != 1 {
		t.Errorf("%d log lines say the credential was refused; want exactly 1", n)
	}
	if n := lines.count("APNs is taking pushes again"); n != 1 {
		t.Errorf("%d log lines say pushes flow again; want 1", n)
	}
	if s := p.Stats(); s.Held != "" {
		t.Errorf("still held: %+v", s)
	}
}

func count(list []string, v string) int {
	n := 0
	for _, x := range list {
		n += btoi(x == v)
	}
	return n
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// An outage (5xx or no answer, several in a row): pushes are held and APNs
// probed with one push at a time, RetryBase apart, doubling up to
// MaxProbeInterval; the first success releases the whole backlog at once,
// instead of each push waiting out its own backoff; every device gets its
// push exactly once.
func TestOutageIsProbedAndTheBacklogDrainsAtOnce(t *testing.T) {
	e := newAPNsEnv(t)
	var regs []store.Registration
	for i := range 10 {
		regs = append(regs, reg(fmt.Sprintf("user%d", i), i+1, fmt.Sprintf("acct-%d", i)))
	}
	st := newMemStore(regs...)
	e.fake.SetDefault(500, "InternalServerError")
	clk := newFakeClock()
	lines, log := newLogLines(t)
	p := gatedPusher(t, e, st, clk, log)
	startRun(t, p)

	notifyAll(p, regs)
	start := clk.Now()
	clk.waitArmed(t, start.Add(time.Second)) // the first probe, RetryBase after the gate closed
	if n := len(e.fake.Requests()); n != push.OutageAfter {
		t.Fatalf("%d requests before the gate closed; want %d", n, push.OutageAfter)
	}
	if s := p.Stats(); s.Held != "outage" {
		t.Fatalf("held = %q; want outage", s.Held)
	}
	clk.Advance(time.Second)
	clk.waitArmed(t, start.Add(time.Second+push.MaxProbeInterval))
	if n := len(e.fake.Requests()); n != push.OutageAfter+1 {
		t.Fatalf("%d requests after one probe; want %d", n, push.OutageAfter+1)
	}

	e.fake.SetDefault(200, "")
	clk.Advance(push.MaxProbeInterval) // no further time passes: the backlog goes now
	waitFor(t, 5*time.Second, "every device's push", func() bool {
		ok := 0
		for _, r := range regs {
			if res := st.results(r.DeviceToken); len(res) > 0 && res[len(res)-1] == "200" {
				ok++
			}
		}
		return ok == len(regs)
	})
	waitIdle(t, p)
	for _, r := range regs {
		if n200 := count(st.results(r.DeviceToken), "200"); n200 != 1 {
			t.Errorf("%s got %d accepted pushes; want 1", r.User, n200)
		}
	}
	if n := lines.count("APNs is not answering"); n != 1 {
		t.Errorf("%d lines say APNs is not answering; want 1", n)
	}
	if n := lines.count("APNs is taking pushes again", "cause=outage"); n != 1 {
		t.Errorf("%d lines say APNs is back; want 1", n)
	}
}

// Answers that end a push but keep its registration: not retried, not
// pruned, logged with why, counted.
func TestRejectedAnswersAreKeptAndExplained(t *testing.T) {
	for _, tc := range []struct {
		status int
		reason string
		why    string
	}{
		{400, "DeviceTokenNotForTopic", "registers again at its next IMAP session"},
		{413, "PayloadTooLarge", "larger than APNs takes"},
		{400, "TopicDisallowed", "check apns.topic"},
	} {
		t.Run(tc.reason, func(t *testing.T) {
			e := newAPNsEnv(t)
			st := newMemStore(reg("alice", 1, "acct-a"), reg("bob", 2, "acct-b"))
			e.fake.SetResponse(token(1), tc.status, tc.reason)
			lines, log := newLogLines(t)
			p := push.New(push.Options{Store: st, Sender: e.sender, Logger: log, Topic: e.creds.Topic})
			startRun(t, p)
			p.Notify(event.Event{User: "alice", Mailbox: "INBOX", Kind: event.KindNew})
			p.Notify(event.Event{User: "bob", Mailbox: "INBOX", Kind: event.KindNew})
			waitIdle(t, p)

			if n := answered(requestTokens(e))[token(1)]; n != 1 {
				t.Errorf("%d requests for alice; want 1 (not retried)", n)
			}
			if !st.has("alice", token(1)) {
				t.Error("alice's registration was deleted")
			}
			answer := push.Response{StatusCode: tc.status, Reason: tc.reason}.String()
			if n := lines.count("push rejected by APNs; registration kept", tc.why); n != 1 {
				t.Errorf("%d log lines explain %s; want 1", n, answer)
			}
			if s := p.Stats(); s.Answers[answer] != 1 || s.Answers["200"] != 1 || s.Held != "" {
				t.Errorf("stats = %+v; want one %s, one 200, nothing held", s, answer)
			}
		})
	}
}
