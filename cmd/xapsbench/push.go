package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/xapsproxy/xapsproxy/internal/dovecotrun"
)

// The push phase's device: bob's (alice's INBOX holds the bulk mailbox),
// registered as iPhone Mail registers.
const (
	pushUser      = "bob"
	pushAccountID = "0715A26B-CA09-4730-A419-793000CA982E"
)

// Timing of the push phase.
const (
	pushDeadline = 10 * time.Second // per delivery, for the push and for the EXISTS
	// pushGap is the pause after a delivery's push and EXISTS, before the
	// next delivery. It must exceed Dovecot's 500 ms notification delay: the
	// watcher's EXAMINE after a push touches INBOX's index, which starts the
	// direct client's 500 ms timer, and a delivery within that window is
	// announced early (with 250 ms, the direct p50 fell to ~250 ms).
	pushGap        = time.Second
	registerPause  = 500 * time.Millisecond // registration to the first warm-up delivery
	warmupWait     = 2 * time.Second        // per warm-up delivery
	warmupDeadline = 30 * time.Second       // registration to the first push
	pushSettle     = time.Second            // quiet time after the warm-up and at the end
)

// pushResult is what the push phase measured. Latencies are from the
// moment Deliver returned.
type pushResult struct {
	user       string
	deliveries int
	lmtp       []time.Duration // Deliver's own duration
	push       []time.Duration // to the APNs request's arrival, per delivery that got one
	exists     []time.Duration // to the direct client's EXISTS
	cost       []time.Duration // push - EXISTS, per delivery with both
	missing    []int           // deliveries (1-based) without a push
	noExists   []int           // deliveries without an EXISTS at the direct client
	extra      int             // pushes that matched no delivery
	requests   int             // requests at the fake APNs, warm-up included
	conns      int             // TLS connections to the fake APNs
	tlsState   string
	problems   []string // malformed requests
	warmups    int      // deliveries until the first push
	firstPush  time.Duration
}

// errors counts what went wrong: missing pushes, extra and malformed ones.
func (p *pushResult) errors() int {
	return len(p.missing) + len(p.noExists) + p.extra + len(p.problems)
}

// measurePush registers a device for pushUser through xapsproxy (x),
// waits for its watcher with warm-up deliveries, then delivers n messages
// one at a time, timing each to the direct client's EXISTS and to the
// APNs request at apns.
func measurePush(ctx context.Context, b *bench, dc *dovecotrun.Instance, x *proxyProc, apns *fakeAPNs, n int) (*pushResult, error) {
	password := dc.Password(pushUser)
	if password == "" {
		return nil, fmt.Errorf("push: Dovecot has no user %s", pushUser)
	}
	rcpt := pushUser + "@example.com"
	res := &pushResult{user: pushUser, deliveries: n}
	idle, err := startIdle(ctx, dc.IMAPAddr, pushUser, password)
	if err != nil {
		return nil, fmt.Errorf("push: %w", err)
	}
	defer idle.Close()

	fmt.Fprintf(b.progress, "push: registering a device for %s through xapsproxy, waiting for its watcher\n", pushUser)
	token := newDeviceToken()
	apns.addDevice(token, pushAccountID, "INBOX")
	registered := time.Now()
	dev := device{user: pushUser, password: password, token: token, accountID: pushAccountID, mailboxes: []string{"INBOX"}}
	if err := registerDevice(ctx, target{name: "xapsproxy", addr: x.addr, tls: b.clientTLS}, dev); err != nil {
		return nil, fmt.Errorf("push: %w", err)
	}
	// The watcher takes a UIDNEXT baseline before it IDLEs, and mail from
	// before the baseline is not pushed: deliver until a push comes.
	if err := sleep(ctx, registerPause); err != nil {
		return nil, err
	}
	seq := 0
	for {
		seq++
		if err := dc.Deliver(rcpt, pushMessage(seq)); err != nil {
			return nil, fmt.Errorf("push: warm-up: %w", err)
		}
		a, ok, err := apns.next(ctx, warmupWait)
		if err != nil {
			return nil, fmt.Errorf("push: warm-up: %w", err)
		}
		if ok {
			res.warmups, res.firstPush = seq, a.at.Sub(registered)
			break
		}
		if time.Since(registered) > warmupDeadline {
			return nil, fmt.Errorf("push: no push within %v of registering and %d deliveries; fake APNs log:\n%s\nxapsproxy log:\n%s",
				warmupDeadline, seq, apns.log.String(), x.out.String())
		}
	}
	if err := sleep(ctx, pushSettle); err != nil {
		return nil, err
	}
	apns.take() // late pushes of the warm-up, if any

	fmt.Fprintf(b.progress, "push: %d deliveries over LMTP, one at a time\n", n)
	for i := 1; i <= n; i++ {
		seq++
		if err := measureOne(ctx, dc, rcpt, seq, idle.initial+seq, apns, idle, res, i); err != nil {
			return nil, fmt.Errorf("push: delivery %d: %w", i, err)
		}
		if i%10 == 0 || i == n {
			fmt.Fprintf(b.progress, "  push %d/%d\n", i, n)
		}
		if err := sleep(ctx, pushGap); err != nil {
			return nil, err
		}
		res.extra += len(apns.take())
	}
	if err := sleep(ctx, pushSettle); err != nil {
		return nil, err
	}
	res.extra += len(apns.take())
	res.requests, res.conns, res.problems, res.tlsState = apns.stats()
	for _, d := range [][]time.Duration{res.lmtp, res.push, res.exists, res.cost} {
		slices.Sort(d)
	}
	return res, nil
}

// measureOne delivers message seq, which makes the INBOX hold total
// messages, and waits for its push and its EXISTS.
func measureOne(ctx context.Context, dc *dovecotrun.Instance, rcpt string, seq, total int,
	apns *fakeAPNs, idle *idleClient, res *pushResult, i int) error {
	start := time.Now()
	if err := dc.Deliver(rcpt, pushMessage(seq)); err != nil {
		return err
	}
	delivered := time.Now()
	res.lmtp = append(res.lmtp, delivered.Sub(start))
	var pushed time.Time
	for {
		a, ok, err := apns.next(ctx, time.Until(delivered.Add(pushDeadline)))
		if err != nil {
			return err
		}
		if !ok {
			res.missing = append(res.missing, i)
			break
		}
		if a.at.Before(start) { // sent before this delivery: not its push
			res.extra++
			continue
		}
		pushed = a.at
		res.push = append(res.push, pushed.Sub(delivered))
		break
	}
	ev, ok, err := idle.waitExists(ctx, total, time.Until(delivered.Add(pushDeadline)))
	switch {
	case err != nil:
		return err
	case !ok:
		res.noExists = append(res.noExists, i)
	default:
		res.exists = append(res.exists, ev.at.Sub(delivered))
		if !pushed.IsZero() {
			res.cost = append(res.cost, pushed.Sub(ev.at))
		}
	}
	return nil
}

// device is one iPhone Mail account to register.
type device struct {
	user, password string
	token          string
	accountID      string
	mailboxes      []string // plain atoms, INBOX first
}

// registerDevice does what iPhone Mail does to register for pushes: TLS,
// LOGIN, XAPPLEPUSHSERVICE for d's mailboxes; it checks the answer names
// each mailbox and then the certificate's topic.
func registerDevice(ctx context.Context, t target, d device) error {
	c, err := dialIMAP(ctx, t, 4096)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.deadline(ctx, 30*time.Second); err != nil {
		return err
	}
	if _, err := c.tagged("a1", "LOGIN "+d.user+" "+d.password); err != nil {
		return fmt.Errorf("register: %w", err)
	}
	untagged, err := c.tagged("a2", "XAPPLEPUSHSERVICE aps-version 2 aps-account-id "+d.accountID+
		" aps-device-token "+d.token+" aps-subtopic com.apple.mobilemail mailboxes ("+strings.Join(d.mailboxes, " ")+")")
	if err != nil {
		return fmt.Errorf("register: %w", err)
	}
	// As Apple's server answers: a line per registered mailbox, then the
	// version and topic.
	var want []string
	for _, mb := range d.mailboxes {
		want = append(want, "* XAPPLEPUSHSERVICE \"mailbox\" \""+mb+"\"\r\n")
	}
	want = append(want, "* XAPPLEPUSHSERVICE aps-version \"2\" aps-topic \""+apnsTopic+"\"\r\n")
	got := make([]string, len(untagged))
	for i, line := range untagged {
		got[i] = string(line)
	}
	if !slices.Equal(got, want) {
		return fmt.Errorf("register: XAPPLEPUSHSERVICE answered %q, want %q", got, want)
	}
	c.tagged("a3", "LOGOUT") // the registration is stored; the answer does not matter
	return nil
}

// newDeviceToken is 32 random bytes in hex, like an APNs device token.
func newDeviceToken() string {
	var b [32]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// pushMessage is a small mail for bob.
func pushMessage(seq int) []byte {
	return fmt.Appendf(nil, "From: Alice <alice@example.com>\r\nTo: Bob <bob@example.com>\r\n"+
		"Subject: push benchmark %d\r\nMessage-ID: <push-%d@example.com>\r\n\r\nNew mail number %d.\r\n", seq, seq, seq)
}

// sleep waits d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
