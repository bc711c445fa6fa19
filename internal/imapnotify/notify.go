package imapnotify

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/xapsproxy/xapsproxy/event"
	"github.com/xapsproxy/xapsproxy/internal/imapwire"
)

// maxFilterNames is the most mailbox names Notify puts in a "mailboxes"
// filter; Dovecot refuses more than 100 per namespace.
const maxFilterNames = 100

// MailboxStatus is a watched mailbox as the server described it when
// Notify set the notifications up.
type MailboxStatus struct {
	Mailbox       string // decoded (UTF-8), as in a Hint
	Name          string // as given to Notify
	UIDValidity   uint32
	UIDNext       uint32
	Messages      uint32
	Unseen        uint32
	HighestModSeq uint64 // 0 if the server did not say
}

// box is a watched mailbox and what the server last said of it.
type box struct {
	wire  string // as given to Notify
	name  string // decoded, for hints
	known bool   // st holds values the server sent
	st    statusVals
}

func (b *box) seen(v statusVals) {
	b.st.merge(v)
	b.known = true
}

// nameKey is how a mailbox name is compared: INBOX in any case is INBOX.
func nameKey(s string) string {
	if strings.EqualFold(s, "INBOX") {
		return "INBOX"
	}
	return s
}

func decodeName(s string) string {
	if d, err := imapwire.DecodeMailbox(s); err == nil {
		return d
	}
	return s
}

// sameMailbox reports whether the server's name for a mailbox, in modified
// UTF-7 or (as Dovecot's NOTIFY does) UTF-8, is the one asked for.
func sameMailbox(server, asked string) bool {
	k := nameKey(server)
	return k == nameKey(asked) || k == nameKey(decodeName(asked))
}

// lookup finds a watched mailbox by a name the server used, either way.
func (c *Client) lookup(name string) *box {
	return c.boxes[nameKey(name)]
}

// Events asked for; the first two are required (RFC 5465 section 5).
var allEvents = []string{"MessageNew", "MessageExpunge", "FlagChange", "MailboxName"}

// simpleName reports whether a mailbox name means the same in modified
// UTF-7 and in UTF-8 (printable ASCII without "&"), so that a server
// matching the "mailboxes" filter against either matches it.
func simpleName(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '&' {
			return false
		}
	}
	return s != ""
}

// Notify sets the notifications for mailboxes, named as on the wire
// (modified UTF-7, as devices registered them); it replaces any earlier set
// (with NOTIFY NONE first: Dovecot 2.3.19 stops sending notifications when
// one SET replaces another). It returns the server's STATUS of each watched
// mailbox that exists: compare them with what is stored to catch up with
// what happened while nothing was watching. Hints queued before are
// dropped. With no mailboxes, notifications stop (NOTIFY NONE).
//
// The server must offer NOTIFY (else ErrUnsupported). CONDSTORE is enabled
// first when offered. A server that refuses FlagChange or MailboxName
// (NO [BADEVENT]) is asked again without them; one that refuses a
// "mailboxes" filter as too long (NO [NOTIFICATIONOVERFLOW]) is asked for
// "personal" instead.
func (c *Client) Notify(ctx context.Context, mailboxes []string) ([]MailboxStatus, error) {
	caps, err := c.Capabilities(ctx)
	if err != nil {
		return nil, err
	}
	if !slices.Contains(caps, "NOTIFY") {
		return nil, ErrUnsupported
	}
	if slices.Contains(caps, "CONDSTORE") && !c.condstore {
		r, err := c.run(ctx, "ENABLE", c.command("ENABLE CONDSTORE").done(), nil)
		if err != nil {
			return nil, err
		}
		if r.kind != "OK" {
			c.log.Debug("imapnotify: ENABLE CONDSTORE refused", "text", r.text)
		}
	}
	boxes := make(map[string]*box, 2*len(mailboxes))
	var names []string
	exact := len(mailboxes) <= maxFilterNames
	for _, m := range mailboxes {
		if c.lookupIn(boxes, m) != nil {
			continue
		}
		b := &box{wire: m, name: decodeName(m)}
		boxes[nameKey(m)] = b
		boxes[nameKey(b.name)] = b
		names = append(names, m)
		exact = exact && simpleName(m)
	}
	c.boxes, c.pending, c.notifying, c.overflow = boxes, nil, false, false
	if c.armed || len(names) == 0 {
		// Dovecot 2.3.19 sets the new notifications up before it takes the
		// old ones down, and then sends nothing until the next command:
		// so first NONE, which it handles well.
		r, err := c.run(ctx, "NOTIFY", c.command("NOTIFY NONE").done(), nil)
		if err != nil {
			return nil, err
		}
		if err := answer("NOTIFY", r); err != nil {
			return nil, err
		}
		c.armed = false
		if len(names) == 0 {
			c.notifying = true
			return nil, nil
		}
	}

	events := slices.Clone(allEvents)
	var statuses []MailboxStatus
	hook := func(r *resp) bool {
		if r.kind != "STATUS" {
			return false
		}
		name, v, err := parseStatus(r.data)
		if err != nil {
			return false // handled (and counted as lost) like any other
		}
		if b := c.lookup(name); b != nil {
			b.seen(v)
		}
		return true
	}
	for try := 0; ; try++ {
		r, err := c.run(ctx, "NOTIFY", c.notifyCommand(names, exact, events), hook)
		if err != nil {
			return nil, err
		}
		if r.kind == "OK" {
			break
		}
		rerr := answer("NOTIFY", r).(*ResponseError)
		switch {
		case try >= 2:
			return nil, rerr
		case r.code == "NOTIFICATIONOVERFLOW" && exact:
			exact = false
			continue
		case r.code == "BADEVENT":
			bad := strings.Fields(strings.ToUpper(r.codeArg))
			if slices.Contains(bad, "MESSAGENEW") || slices.Contains(bad, "MESSAGEEXPUNGE") {
				return nil, fmt.Errorf("%w: %w", ErrUnsupported, rerr)
			}
			if n := len(events); n > 2 {
				events = slices.DeleteFunc(events, func(e string) bool { return slices.Contains(bad, strings.ToUpper(e)) })
				if len(bad) == 0 || len(events) == n {
					events = events[:2]
				}
				continue
			}
		}
		return nil, rerr
	}
	c.notifying, c.armed = true, true
	for _, m := range names {
		b := c.lookup(m)
		if !b.known {
			continue
		}
		statuses = append(statuses, MailboxStatus{
			Mailbox: b.name, Name: b.wire,
			UIDValidity: b.st.uidValidity, UIDNext: b.st.uidNext,
			Messages: b.st.messages, Unseen: b.st.unseen, HighestModSeq: b.st.modSeq,
		})
	}
	if c.overflow {
		// Lost already, while the answer came: the statuses may be stale.
		c.overflow = false
		c.notifying = false
		return nil, ErrOverflow
	}
	return statuses, nil
}

func (c *Client) lookupIn(boxes map[string]*box, name string) *box {
	if b := boxes[nameKey(name)]; b != nil {
		return b
	}
	return boxes[nameKey(decodeName(name))]
}

// notifyCommand composes NOTIFY SET STATUS for names, with the mailboxes
// filter (exact) or personal.
func (c *Client) notifyCommand(names []string, exact bool, events []string) []chunk {
	ev := "(" + strings.Join(events, " ") + ")"
	b := c.command("NOTIFY SET STATUS ")
	if !exact {
		return b.raw("(personal " + ev + ")").done()
	}
	b.raw("(mailboxes (")
	for i, m := range names {
		if i > 0 {
			b.raw(" ")
		}
		b.astring(m)
	}
	b.raw(") " + ev + ")")
	if slices.Contains(events, "MailboxName") {
		// A rename is matched by its new name: only "personal" sees a
		// watched mailbox renamed away.
		b.raw(" (personal (MailboxName))")
	}
	return b.done()
}

// onStatus turns an unsolicited STATUS into a hint.
func (c *Client) onStatus(data []byte) {
	name, v, err := parseStatus(data)
	if name == "" && err != nil {
		c.lost("a STATUS that could not be parsed")
		return
	}
	b := c.lookup(name)
	if b == nil {
		return // not watched
	}
	if err != nil {
		c.log.Debug("imapnotify: malformed STATUS", "mailbox", b.name)
		c.hint(b, event.Unknown)
		return
	}
	what, ok := classify(b, v)
	b.seen(v)
	if ok {
		c.hint(b, what)
	}
}

// classify compares a STATUS with the last one seen of b; ok is false when
// nothing changed.
func classify(b *box, v statusVals) (what event.What, ok bool) {
	old := b.st
	both := old.have & v.have
	switch {
	case !b.known:
		return event.Unknown, true
	case both&haveUIDValidity != 0 && v.uidValidity != old.uidValidity:
		return event.Unknown, true
	case both&haveUIDNext != 0 && v.uidNext > old.uidNext:
		return event.Arrived, true
	case both&haveMessages != 0 && v.messages < old.messages:
		return event.Expunged, true
	case both&haveMessages != 0 && v.messages > old.messages:
		return event.Arrived, true
	case both&haveUnseen != 0 && v.unseen != old.unseen,
		both&haveModSeq != 0 && v.modSeq != old.modSeq:
		return event.Flags, true
	case v.have&^old.have != 0:
		return event.Unknown, true // something not seen before
	}
	return 0, false
}

// onList turns an unsolicited LIST (RFC 5465 MailboxName) into hints.
func (c *Client) onList(data []byte) {
	name, v, err := parseList(data)
	if err != nil {
		if name == "" || c.lookup(name) != nil {
			c.lost("a LIST that could not be parsed")
		}
		return
	}
	if v.hasOldName {
		if b := c.lookup(v.oldName); b != nil {
			c.gone(b)
		}
	}
	b := c.lookup(name)
	switch {
	case b == nil:
	case v.nonExistent:
		c.gone(b)
	case v.hasOldName:
		// Renamed to a watched name: it exists now, with whatever it holds.
		b.known, b.st = false, statusVals{}
		c.hint(b, event.Unknown)
	default:
		// Created: empty when it was, so that mail delivered into it
		// since (LMTP creates INBOX with the first message) is Arrived.
		b.known, b.st = true, statusVals{have: haveMessages | haveUIDNext, uidNext: 1}
		c.hint(b, event.Unknown)
	}
}

// gone reports b gone, with the values it had, and forgets them.
func (c *Client) gone(b *box) {
	c.hint(b, event.Gone)
	b.known, b.st = false, statusVals{}
}

// hint queues a hint for b; one already queued for the same mailbox and
// kind takes the newer values instead, so the queue stays bounded by the
// watched mailboxes.
func (c *Client) hint(b *box, what event.What) {
	h := event.Hint{User: c.opts.User, Mailbox: b.name, What: what, UIDValidity: b.st.uidValidity, UIDNext: b.st.uidNext}
	for i := range c.pending {
		if p := &c.pending[i]; p.Mailbox == h.Mailbox && p.What == h.What {
			*p = h
			return
		}
	}
	c.pending = append(c.pending, h)
}

// Next returns the next hint, waiting for the server to send one. While it
// waits it keeps the connection alive (Options.Keepalive). ctx ending while
// it waits makes it return ctx's error with the connection still usable
// (ending while a response is being read is fatal). ErrOverflow means
// events were lost: it comes once after a loss the server survived, and
// every time while NOTIFY is off, until Notify succeeds again. Other errors
// are fatal.
func (c *Client) Next(ctx context.Context) (event.Hint, error) {
	for {
		if len(c.pending) > 0 {
			h := c.pending[0]
			c.pending = slices.Delete(c.pending, 0, 1)
			return h, nil
		}
		if err := c.usable(); err != nil {
			return event.Hint{}, err
		}
		if c.boxes == nil {
			return event.Hint{}, errors.New("imapnotify: Next before Notify")
		}
		if c.overflow || !c.notifying {
			// Lost once; or NOTIFY is off (the server turned it off, or
			// Notify failed): nothing will come until Notify succeeds.
			c.overflow = false
			return event.Hint{}, ErrOverflow
		}
		if err := ctx.Err(); err != nil {
			return event.Hint{}, err
		}
		if err := c.await(ctx); err != nil {
			return event.Hint{}, err
		}
	}
}

// await waits for the next response and handles it, sending the keepalive
// NOOP when it is due.
func (c *Client) await(ctx context.Context) error {
	for {
		deadline := c.idleDeadline()
		if err := c.raw.SetReadDeadline(deadline); err != nil {
			return c.fail(err)
		}
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		// ctx may end only this wait, before anything is read: a
		// keepalive sent or a response begun is finished whatever ctx
		// does, within CommandTimeout, so the client stays usable.
		stop := c.watchContext(ctx)
		err := c.waitInput()
		stop()
		if err == nil {
			break
		}
		switch {
		case !isTimeout(err):
			return c.fail(fmt.Errorf("imapnotify: read: %w", err))
		case ctx.Err() != nil:
			return context.Cause(ctx) // nothing was consumed: still usable
		case deadline.IsZero() || time.Now().Before(deadline):
			continue // a deadline left over from an earlier cancellation
		case c.noopTag != "":
			return c.fail(fmt.Errorf("imapnotify: no answer to NOOP within %v: connection lost", c.opts.CommandTimeout))
		}
		c.noopTag = c.nextTag()
		c.noopSent = time.Now()
		if err := c.write(context.Background(), []byte(c.noopTag+" NOOP\r\n")); err != nil {
			return c.fail(fmt.Errorf("imapnotify: keepalive: %w", err))
		}
	}
	r, tooLong, err := c.readResponse(context.Background())
	if err == nil {
		err = c.handle(r, tooLong, nil)
	}
	if err != nil {
		return c.fail(fmt.Errorf("imapnotify: %w", err))
	}
	return nil
}

// idleDeadline is when waiting for the server must stop: the keepalive
// NOOP's answer is due, or the next one must be sent; zero for never.
func (c *Client) idleDeadline() time.Time {
	switch {
	case c.noopTag != "":
		return c.noopSent.Add(c.opts.CommandTimeout)
	case c.opts.Keepalive > 0:
		return c.lastWrite.Add(c.opts.Keepalive)
	}
	return time.Time{}
}
