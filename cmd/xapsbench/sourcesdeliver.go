package main

import (
	"cmp"
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/xapsproxy/xapsproxy/internal/dovecotrun"
)

// lmtpSenders is how many LMTP connections deliver at once, as an MTA's
// few delivery processes would.
const lmtpSenders = 4

// dovecotIdleCheck is Dovecot's mailbox_idle_check_interval (30 s by
// default): how often a session that could not get an inotify instance
// looks at its mailboxes instead.
const dovecotIdleCheck = 30 * time.Second

// deliveryResult is what the deliveries of one source measured.
type deliveryResult struct {
	window   time.Duration              // over which the deliveries were spread
	wait     time.Duration              // the longest wait for pushes after the last one
	push     map[string][]time.Duration // by mailbox, sorted: DATA reply -> APNs request
	sent     map[string]int
	lmtp     []time.Duration // MAIL FROM -> DATA reply, sorted
	missing  []string        // "user0042 Notes"
	extra    int             // pushes that matched no delivery
	problems []string        // malformed pushes
	requests int             // at the fake APNs
	conns    int             // xapsproxy's TLS connections to it
}

// job is one delivery.
type job struct {
	dev     device
	mailbox string
	offset  time.Duration // from the start of the deliveries
	start   time.Time     // MAIL FROM sent
	done    time.Time     // the reply to the end of DATA read
	pushed  time.Time     // its APNs request arrived (zero: none yet)
}

func (j *job) rcpt() string {
	if j.mailbox == "INBOX" {
		return j.dev.user + "@example.com"
	}
	return j.dev.user + "+" + j.mailbox + "@example.com"
}

// deliverAll delivers sb.s.deliveries mails to INBOX and as many to Notes
// (over LMTP to user+Notes@..., which lmtp_save_to_detail_mailbox stores in
// Notes), each to another random account, at random moments spread over a
// window (for the IDLE sources at least one poll interval, so that Notes
// meets every phase of the polls), and matches each with its push.
func (sb *sourcesBench) deliverAll(ctx context.Context, dc *dovecotrun.Instance, apns *fakeAPNs, k sourceKind, devs []device) (*deliveryResult, error) {
	n := sb.s.deliveries
	res := &deliveryResult{push: map[string][]time.Duration{}, sent: map[string]int{"INBOX": n, "Notes": n}}
	res.window = time.Duration(float64(2*n) / sb.s.rate * float64(time.Second))
	res.wait = 10 * time.Second
	if !k.events {
		res.wait += dovecotIdleCheck // sessions without inotify
	}
	if k.idle() {
		res.window = max(res.window, sb.s.pollInterval)
		res.wait = max(res.wait, sb.s.pollInterval+10*time.Second)
	}
	jobs := make([]*job, 2*n)
	for i, a := range rand.Perm(len(devs))[:2*n] {
		jobs[i] = &job{dev: devs[a], mailbox: "INBOX", offset: time.Duration(rand.Int64N(int64(res.window)))}
		if i >= n {
			jobs[i].mailbox = "Notes"
		}
	}
	slices.SortFunc(jobs, func(a, b *job) int { return cmp.Compare(a.offset, b.offset) })
	apns.take() // nothing before the deliveries is theirs
	fmt.Fprintf(sb.progress, "  %s: %d deliveries to INBOX and Notes over %v\n", k.name, 2*n, res.window.Round(time.Second))
	if err := sb.send(ctx, dc, jobs); err != nil {
		return nil, err
	}
	last := jobs[0].done
	for _, j := range jobs {
		if j.done.After(last) {
			last = j.done
		}
	}
	if err := matchPushes(ctx, apns, jobs, last.Add(res.wait), res); err != nil {
		return nil, err
	}
	for _, j := range jobs {
		res.lmtp = append(res.lmtp, j.done.Sub(j.start))
		if j.pushed.IsZero() {
			res.missing = append(res.missing, j.dev.user+" "+j.mailbox)
			continue
		}
		res.push[j.mailbox] = append(res.push[j.mailbox], j.pushed.Sub(j.done))
	}
	for _, d := range res.push {
		slices.Sort(d)
	}
	slices.Sort(res.lmtp)
	res.requests, res.conns, res.problems, _ = apns.stats()
	return res, nil
}

// send runs the jobs at their offsets over lmtpSenders kept LMTP
// connections (a job waits for a free one when all are busy: its time
// counts from its own MAIL FROM).
func (sb *sourcesBench) send(ctx context.Context, dc *dovecotrun.Instance, jobs []*job) error {
	work := make(chan *job)
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	fail := func(err error) {
		mu.Lock()
		if first == nil {
			first = err
		}
		mu.Unlock()
	}
	for s := range min(lmtpSenders, len(jobs)) {
		l, err := dovecotrun.DialLMTP(dc.LMTPAddr)
		if err != nil {
			close(work)
			wg.Wait()
			return err
		}
		wg.Go(func() {
			defer l.Close()
			for j := range work {
				j.start = time.Now()
				err := l.Deliver(sourceMessage(s, j), j.rcpt())
				j.done = time.Now()
				if err != nil {
					fail(err)
				}
			}
		})
	}
	t0 := time.Now()
	for _, j := range jobs {
		if err := sleep(ctx, time.Until(t0.Add(j.offset))); err != nil {
			fail(err)
			break
		}
		work <- j
	}
	close(work)
	wg.Wait()
	return first
}

// matchPushes takes the fake's arrivals until every job has its push or
// deadline passes. A job's push is the first request for its device, sent
// after its MAIL FROM, naming its mailbox; any other request is extra.
func matchPushes(ctx context.Context, apns *fakeAPNs, jobs []*job, deadline time.Time, res *deliveryResult) error {
	byToken := make(map[string]*job, len(jobs))
	for _, j := range jobs {
		byToken[j.dev.token] = j
	}
	left := len(jobs)
	for left > 0 {
		a, ok, err := apns.next(ctx, time.Until(deadline))
		if err != nil {
			return err
		}
		if !ok {
			break
		}
		j := byToken[a.token]
		if j == nil || !j.pushed.IsZero() || a.at.Before(j.start) || !slices.Contains(a.mailboxes, j.mailbox) {
			res.extra++
			continue
		}
		j.pushed = a.at
		left--
	}
	res.extra += len(apns.take())
	return nil
}

// sourceMessage is a small mail for job j, sent by sender s.
func sourceMessage(s int, j *job) []byte {
	return fmt.Appendf(nil, "From: Sender <sender@example.com>\r\nTo: <%s>\r\n"+
		"Subject: sources benchmark, %s\r\nMessage-ID: <sources-%d-%d@example.com>\r\n\r\n"+
		"A mail for %s, %v into the deliveries.\r\n", j.rcpt(), j.mailbox, s, j.offset, j.mailbox, j.offset)
}

// hookResult is LMTP delivery times with Dovecot's events hook on (posting
// to the running xapsproxy) and off, taken in turns.
type hookResult struct {
	on, off  []time.Duration // MAIL FROM -> DATA reply, sorted
	accounts int
}

// hookPace is the least time from one pair of hook deliveries to the
// next, so that xapsproxy's work for one (its push, the mailbox state it
// stores) is done before the next is timed, as between deliveries that do
// not come back to back.
const hookPace = 20 * time.Millisecond

// hookCost delivers sb.s.hookDeliveries mails to on (the hooked Dovecot of
// the events source, which posts to the running xapsproxy) and as many to
// a Dovecot without the hook, in turns and to the same few accounts
// (warmed up by one delivery each), one at a time over a kept LMTP
// connection each, a pair every hookPace at most.
func (sb *sourcesBench) hookCost(ctx context.Context, on *dovecotrun.Instance) (*hookResult, error) {
	res := &hookResult{accounts: min(20, sb.s.accounts)}
	off, err := sb.startDovecot(sourceUsers(res.accounts), false, "")
	if err != nil {
		return nil, err
	}
	defer off.Close()
	var ls [2]*dovecotrun.LMTP // on, off
	for i, d := range []*dovecotrun.Instance{on, off} {
		if ls[i], err = dovecotrun.DialLMTP(d.LMTPAddr); err != nil {
			return nil, err
		}
		defer ls[i].Close()
	}
	msg := func(i int) []byte {
		return fmt.Appendf(nil, "From: Sender <sender@example.com>\r\nSubject: hook %d\r\nMessage-ID: <hook-%d@example.com>\r\n\r\n"+
			"A mail to time the delivery.\r\n", i, i)
	}
	for i := range res.accounts {
		for _, l := range ls {
			if err := l.Deliver(msg(i), reconnectUser(i+1)+"@example.com"); err != nil {
				return nil, err
			}
		}
	}
	next := time.Now()
	for i := range sb.s.hookDeliveries {
		if err := sleep(ctx, time.Until(next)); err != nil {
			return nil, err
		}
		next = time.Now().Add(hookPace)
		rcpt := reconnectUser(i%res.accounts+1) + "@example.com"
		for turn := range 2 {
			side := (i + turn) % 2 // on first, then off first, in turns
			start := time.Now()
			if err := ls[side].Deliver(msg(i), rcpt); err != nil {
				return nil, err
			}
			took := time.Since(start)
			if side == 0 {
				res.on = append(res.on, took)
			} else {
				res.off = append(res.off, took)
			}
		}
	}
	slices.Sort(res.on)
	slices.Sort(res.off)
	return res, nil
}
