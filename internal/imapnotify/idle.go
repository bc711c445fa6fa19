package imapnotify

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/xapsproxy/xapsproxy/internal/imapwire"
)

// maxUpdates bounds the updates kept between two takes; past it they are
// dropped and an UpdateLost is kept instead.
const maxUpdates = 1000

// Mailbox is what EXAMINE says of the mailbox it selects.
type Mailbox struct {
	UIDValidity uint32 // 0 if the server did not say
	UIDNext     uint32 // 0 if the server did not say
	Messages    uint32 // EXISTS
}

// UpdateKind is what an Update reports.
type UpdateKind uint8

const (
	// UpdateExists: "* n EXISTS", the mailbox holds Num messages (new
	// mail, usually).
	UpdateExists UpdateKind = iota + 1
	// UpdateExpunge: "* n EXPUNGE", message Num is gone; the ones after it
	// are one lower.
	UpdateExpunge
	// UpdateFetch: "* n FETCH (...)", message Num has new flags (or other
	// data). OnlyRecent tells when they are \Recent alone.
	UpdateFetch
	// UpdateLost: more updates came during one command than are kept
	// (maxUpdates); some were dropped. Look at the mailbox again.
	UpdateLost
)

func (k UpdateKind) String() string {
	switch k {
	case UpdateExists:
		return "EXISTS"
	case UpdateExpunge:
		return "EXPUNGE"
	case UpdateFetch:
		return "FETCH"
	case UpdateLost:
		return "lost"
	}
	return "UpdateKind(" + strconv.Itoa(int(k)) + ")"
}

// Update is what the server says of the selected mailbox on its own: in
// IDLE, or along with the answer to a command.
type Update struct {
	Kind UpdateKind
	Num  uint32 // the count (EXISTS) or a message sequence number
	// OnlyRecent: a FETCH whose FLAGS are exactly \Recent. Dovecot sends
	// that for a message when a hibernated IDLE connection comes back,
	// with no change behind it.
	OnlyRecent bool
}

// Examine selects mailbox read-only (EXAMINE), named as on the wire
// (modified UTF-7), and returns what the server says of it. A refusal is a
// *ResponseError, after which no mailbox is selected (RFC 3501 section
// 6.3.1); the connection stays usable.
func (c *Client) Examine(ctx context.Context, mailbox string) (Mailbox, error) {
	var mb Mailbox
	hook := func(r *resp) bool {
		switch {
		case r.kind == "EXISTS" && r.hasNum:
			mb.Messages = r.num
		case r.kind == "OK" && r.code == "UIDVALIDITY":
			mb.UIDValidity = codeNumber(r.codeArg)
		case r.kind == "OK" && r.code == "UIDNEXT":
			mb.UIDNext = codeNumber(r.codeArg)
		default:
			return false
		}
		return true
	}
	chunks := c.command("EXAMINE ").astring(mailbox).done()
	r, err := c.run(ctx, "EXAMINE", chunks, hook)
	if err != nil {
		return Mailbox{}, err
	}
	if err := answer("EXAMINE", r); err != nil {
		c.selected = false
		return Mailbox{}, err
	}
	c.selected = true
	return mb, nil
}

// codeNumber reads the number of a response code such as UIDNEXT; 0 if
// there is none.
func codeNumber(arg string) uint32 {
	n, err := strconv.ParseUint(strings.TrimSpace(arg), 10, 32)
	if err != nil {
		return 0
	}
	return uint32(n)
}

// Idle starts IDLE (RFC 2177) for at most d (Options.MaxIdle when d is
// zero or longer) and returns once the server has accepted it ("+
// idling"): then call NextUpdate to wait for the server, and Done to end
// IDLE before any other command. A refusal is a *ResponseError (the
// connection stays usable).
func (c *Client) Idle(ctx context.Context, d time.Duration) error {
	if err := c.usable(); err != nil {
		return err
	}
	if c.idleTag != "" {
		return errors.New("imapnotify: IDLE: already in IDLE")
	}
	if d <= 0 || d > c.opts.MaxIdle {
		d = c.opts.MaxIdle
	}
	stop := c.watchContext(ctx)
	tag, r, err := c.startIdle(ctx)
	stop()
	if err != nil {
		return c.fail(ctxErr(ctx, fmt.Errorf("imapnotify: IDLE: %w", err)))
	}
	if r != nil {
		return answer("IDLE", r)
	}
	c.idleTag, c.idleEnd = tag, time.Now().Add(d)
	return nil
}

// startIdle sends IDLE and reads until the continuation request (r nil) or
// a refusal (r).
func (c *Client) startIdle(ctx context.Context) (tag string, r *resp, err error) {
	tag = c.nextTag()
	if err := c.write(ctx, []byte(tag+" IDLE\r\n")); err != nil {
		return "", nil, err
	}
	for {
		r, tooLong, err := c.readResponse(ctx)
		switch {
		case err != nil:
			return "", nil, err
		case r.tag == "+":
			return tag, nil, nil
		case r.tag == tag && r.kind == "OK":
			return "", nil, fmt.Errorf("%w: IDLE answered OK without a continuation request", errProtocol)
		case r.tag == tag:
			return tag, r, checkTagged(r)
		}
		if err := c.handle(r, tooLong, nil); err != nil {
			return "", nil, err
		}
	}
}

// Done ends IDLE (DONE) and waits for the server's answer. Updates sent
// meanwhile are kept for TakeUpdate. A NO or BAD answer is a
// *ResponseError; IDLE is over either way.
func (c *Client) Done(ctx context.Context) error {
	if err := c.usable(); err != nil {
		return err
	}
	tag := c.idleTag
	if tag == "" {
		return errors.New("imapnotify: DONE: not in IDLE")
	}
	c.idleTag = ""
	stop := c.watchContext(ctx)
	err := c.write(ctx, []byte("DONE\r\n"))
	var r *resp
	if err == nil {
		r, err = c.answerTo(ctx, tag, nil)
	}
	stop()
	if err != nil {
		return c.fail(ctxErr(ctx, fmt.Errorf("imapnotify: DONE: %w", err)))
	}
	return answer("IDLE", r)
}

// TakeUpdate returns the oldest update not yet taken, if any, without I/O:
// those that came along with a command's answer, in the order the server
// sent them.
func (c *Client) TakeUpdate() (Update, bool) {
	if len(c.updates) == 0 {
		return Update{}, false
	}
	u := c.updates[0]
	c.updates = c.updates[1:]
	if len(c.updates) == 0 {
		c.updates = nil
	}
	return u, true
}

// NextUpdate returns the next update: one not yet taken, else, in IDLE,
// the next one the server sends, waiting for it. Other responses meanwhile
// (Dovecot's "* OK Still here", "* 1 RECENT") are read and skipped. The
// wait ends, with the connection still usable, when ctx ends (with ctx's
// error; ending while a response is being read is fatal), when the IDLE
// has lasted the time Idle gave it (ErrIdleExpired), and after Interrupt
// (ErrInterrupted). A BYE is an error wrapping ErrBye; it and any other
// error are fatal.
func (c *Client) NextUpdate(ctx context.Context) (Update, error) {
	for {
		if u, ok := c.TakeUpdate(); ok {
			return u, nil
		}
		if err := c.usable(); err != nil {
			return Update{}, err
		}
		if c.idleTag == "" {
			return Update{}, errors.New("imapnotify: NextUpdate outside IDLE")
		}
		if err := ctx.Err(); err != nil {
			return Update{}, err
		}
		if err := c.awaitIdle(ctx); err != nil {
			return Update{}, err
		}
	}
}

// Interrupt makes the wait in NextUpdate return ErrInterrupted, or the
// next wait if none is running; the connection stays usable, and a
// command that runs meanwhile is not disturbed. It is safe from any
// goroutine: it is how another goroutine wakes the owner without a
// context per wait.
func (c *Client) Interrupt() {
	c.closeMu.Lock()
	defer c.closeMu.Unlock()
	if c.closed {
		return
	}
	c.interrupted = true
	if c.waiting {
		c.raw.SetReadDeadline(time.Unix(1, 0))
	}
}

// startWait sets the read deadline of a wait, unless an Interrupt came
// first, which it takes.
func (c *Client) startWait(deadline time.Time) error {
	c.closeMu.Lock()
	defer c.closeMu.Unlock()
	if c.interrupted {
		c.interrupted = false
		return ErrInterrupted
	}
	c.waiting = true
	return c.raw.SetReadDeadline(deadline)
}

// endWait ends a wait. An Interrupt that came meanwhile is kept for the
// next.
func (c *Client) endWait() {
	c.closeMu.Lock()
	defer c.closeMu.Unlock()
	c.waiting = false
}

// awaitIdle waits in IDLE for the next response and handles it.
func (c *Client) awaitIdle(ctx context.Context) error {
	stop := c.watchContext(ctx)
	defer stop()
	for {
		if err := c.startWait(c.idleEnd); err != nil {
			if err == ErrInterrupted {
				return err
			}
			return c.fail(err)
		}
		if ctx.Err() != nil {
			c.endWait()
			return context.Cause(ctx)
		}
		err := c.waitInput()
		c.endWait()
		if err == nil {
			break
		}
		switch {
		case !isTimeout(err):
			return c.fail(fmt.Errorf("imapnotify: IDLE: read: %w", err))
		case ctx.Err() != nil:
			return context.Cause(ctx) // nothing was consumed: still usable
		case time.Now().Before(c.idleEnd):
			continue // interrupted, or a deadline left over from an earlier cancellation
		}
		return ErrIdleExpired
	}
	r, tooLong, err := c.readResponse(ctx)
	switch {
	case err != nil:
	case r.tag == c.idleTag:
		err = fmt.Errorf("%w: the server ended IDLE: %s %s", errProtocol, r.kind, r.text)
	default:
		err = c.handle(r, tooLong, nil)
	}
	if err != nil {
		return c.fail(ctxErr(ctx, fmt.Errorf("imapnotify: IDLE: %w", err)))
	}
	return nil
}

// update keeps an EXISTS, EXPUNGE or FETCH for TakeUpdate.
func (c *Client) update(r *resp) {
	u := Update{Num: r.num}
	switch r.kind {
	case "EXISTS":
		u.Kind = UpdateExists
	case "EXPUNGE":
		u.Kind = UpdateExpunge
	default:
		u.Kind = UpdateFetch
		u.OnlyRecent = onlyRecent(r.data)
	}
	switch n := len(c.updates); {
	case n < maxUpdates:
		c.updates = append(c.updates, u)
	case c.updates[n-1].Kind != UpdateLost:
		c.log.Info("imapnotify: too many updates at once; some dropped")
		c.updates = append(c.updates, Update{Kind: UpdateLost})
	}
}

// onlyRecent reports whether the data of a FETCH response holds FLAGS that
// are exactly \Recent.
func onlyRecent(data []byte) bool {
	d := imapwire.NewDecoder(data, nil)
	d.MaxLiteral = int64(len(data))
	flags, only := false, false
	ok := d.List(func() bool {
		item, ok := d.Atom()
		if !ok || !d.SP() {
			return false
		}
		if !strings.EqualFold(item, "FLAGS") {
			_, _, ok := extValue(d, 0)
			return ok
		}
		n, recent := 0, false
		flags = true
		ok = d.List(func() bool {
			system := d.Special('\\')
			f, ok := d.Atom()
			n++
			recent = recent || system && strings.EqualFold(f, "Recent")
			return ok
		})
		only = n == 1 && recent
		return ok
	}) && d.CRLF()
	return ok && flags && only
}
