package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/xapsproxy/xapsproxy/event"
)

// MaxPayload is the largest NOTIFY payload PostgreSQL takes: it must be
// shorter than 8000 bytes (the NOTIFY reference page).
const MaxPayload = 7999

// ErrTooLarge is returned for a hint too large for one notification (a
// mailbox name of several kilobytes). It is refused, never truncated.
var ErrTooLarge = errors.New("cluster: notification too large")

// listenPing is how long the listener waits for a notification before it
// checks that its connection is alive.
const listenPing = 30 * time.Second

// Kinds of message.
const (
	kindJoin = "join" // an instance joined: rebalance now
	kindFree = "free" // leases were released: claim what is yours
	kindReg  = "reg"  // a user's registrations changed
	kindHint = "hint" // a hint for a user's owner
)

// message is one notification's payload, in JSON. Users are named by their
// key (SHA-256): fixed size whatever the name. Names travel as bytes
// (base64 in JSON), so any string arrives as it was sent, valid UTF-8 or
// not.
type message struct {
	Kind string `json:"k"`
	Key  []byte `json:"key,omitempty"`
	// User is the name, for a registration of a user that may have no
	// lease yet; left out when it would make the payload too large.
	User        []byte     `json:"u,omitempty"`
	Mailbox     []byte     `json:"m,omitempty"`
	What        event.What `json:"w,omitempty"`
	UIDValidity uint32     `json:"v,omitempty"`
	UIDNext     uint32     `json:"n,omitempty"`
}

func encode(m message) (string, error) {
	b, err := json.Marshal(m)
	if err != nil {
		return "", fmt.Errorf("cluster: encode notification: %w", err)
	}
	if len(b) > MaxPayload {
		return "", fmt.Errorf("%w: %d bytes", ErrTooLarge, len(b))
	}
	return string(b), nil
}

func (c *Cluster) send(ctx context.Context, m message) error {
	payload, err := encode(m)
	if err != nil {
		return err
	}
	if _, err := c.opts.Pool.Exec(ctx, "SELECT pg_notify($1, $2)", Channel, payload); err != nil {
		return fmt.Errorf("cluster: notify: %w", err)
	}
	return nil
}

// notify sends m, logging a failure: the others rebalance at their next
// Period all the same.
func (c *Cluster) notify(ctx context.Context, m message) {
	qctx, cancel := context.WithTimeout(ctx, c.opts.Period)
	defer cancel()
	if err := c.send(qctx, m); err != nil && ctx.Err() == nil {
		c.log.Warn("cannot notify the other instances", "kind", m.Kind, "error", err)
	}
}

// PublishRegistration tells the owner of user, whichever instance it is
// (this one included), that user's registrations changed: its OnSync runs.
// If user has no owner yet, its desired owner claims it at once.
func (c *Cluster) PublishRegistration(ctx context.Context, user string) error {
	k := keyOf(user)
	m := message{Kind: kindReg, Key: k[:], User: []byte(user)}
	if _, err := encode(m); errors.Is(err, ErrTooLarge) {
		m.User = nil // the receivers rebalance instead of claiming it alone
	}
	return c.send(ctx, m)
}

// PublishHint hands h to the OnHint of h.User's owner, whichever instance
// it is (this one included). A hint whose mailbox name makes it too large
// for a notification is refused with ErrTooLarge.
func (c *Cluster) PublishHint(ctx context.Context, h event.Hint) error {
	k := keyOf(h.User)
	return c.send(ctx, message{Kind: kindHint, Key: k[:], Mailbox: []byte(h.Mailbox), What: h.What, UIDValidity: h.UIDValidity, UIDNext: h.UIDNext})
}

// listen keeps a connection in LISTEN on Channel until ctx is done,
// reconnecting with a jittered exponential backoff. After a reconnect the
// owned users are synced again and the accounts rebalanced: notifications
// may have been missed meanwhile.
func (c *Cluster) listen(ctx context.Context) {
	failures := 0
	connected := false
	for {
		err := c.listenOnce(ctx, func() {
			if connected {
				c.mu.Lock()
				c.resync = true
				c.stats.Reconnects++
				c.mu.Unlock()
				c.log.Info("listening for the other instances again")
			}
			// Rebalance now: leases freed before the LISTEN were not
			// heard of.
			c.wake()
			connected, failures = true, 0
		})
		if ctx.Err() != nil {
			return
		}
		failures++
		if failures == 1 {
			c.log.Warn("lost the connection that listens for the other instances; reconnecting", "error", err)
		}
		t := time.NewTimer(backoff(failures))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// listenOnce takes a connection of its own, LISTENs, calls up, and hands
// each notification to receive until the connection fails or ctx is done.
func (c *Cluster) listenOnce(ctx context.Context, up func()) error {
	pc, err := c.opts.Pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("acquire: %w", err)
	}
	conn := pc.Hijack() // ours alone: a LISTEN must not go back to the pool
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		conn.Close(cctx)
	}()
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{Channel}.Sanitize()); err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	up()
	for {
		wctx, cancel := context.WithTimeout(ctx, listenPing)
		n, err := conn.WaitForNotification(wctx)
		cancel()
		switch {
		case err == nil:
			c.receive(n.Payload)
			continue
		case ctx.Err() != nil:
			return ctx.Err()
		case !pgconn.Timeout(err) || conn.IsClosed():
			return fmt.Errorf("wait for notification: %w", err)
		}
		pctx, cancel := context.WithTimeout(ctx, c.opts.Period)
		_, err = conn.Exec(pctx, "SELECT 1")
		cancel()
		if err != nil {
			return fmt.Errorf("ping: %w", err)
		}
	}
}

// receive acts on one notification, in the listener's goroutine.
func (c *Cluster) receive(payload string) {
	var m message
	if err := json.Unmarshal([]byte(payload), &m); err != nil {
		c.log.Warn("ignoring a notification that is not ours", "error", err)
		return
	}
	switch m.Kind {
	case kindJoin, kindFree:
		c.wake()
	case kindReg:
		if user, ok := c.ownerOf(m.Key); ok {
			if c.opts.OnSync != nil {
				c.opts.OnSync(user)
			}
			return
		}
		if m.User == nil || keyOf(string(m.User)) != userKey(m.Key) {
			c.wake() // a name too long to travel: rebalance, which finds it
			return
		}
		// The account may have no lease yet: its desired owner claims
		// it, the others leave it.
		user := string(m.User)
		c.mu.Lock()
		mine := desired(user, c.live) == c.id
		if mine {
			c.claim[user] = struct{}{}
		}
		c.mu.Unlock()
		if mine {
			select {
			case c.claimKick <- struct{}{}:
			default:
			}
		}
	case kindHint:
		if user, ok := c.ownerOf(m.Key); ok && c.opts.OnHint != nil {
			c.opts.OnHint(event.Hint{User: user, Mailbox: string(m.Mailbox), What: m.What, UIDValidity: m.UIDValidity, UIDNext: m.UIDNext})
		}
	}
}

// ownerOf returns the name of the user with key k if this instance owns it.
func (c *Cluster) ownerOf(k []byte) (string, bool) {
	if len(k) != len(userKey{}) {
		return "", false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	user, ok := c.byKey[userKey(k)]
	if !ok {
		return "", false
	}
	return user, c.owner(user, time.Now())
}

// backoff is the wait before the next try after failures (≥ 1) in a row:
// exponential from minBackoff to maxBackoff, with equal jitter.
func backoff(failures int) time.Duration {
	d := min(minBackoff<<min(failures-1, 16), maxBackoff)
	return d/2 + rand.N(d/2+1)
}
