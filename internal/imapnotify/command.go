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

// chunk is a piece of a command sent in one write: the command's text up
// to its end or up to a synchronizing literal's header, after which the
// server's "+" is awaited before the next chunk.
type chunk struct {
	text    []byte
	syncLit bool
}

// builder composes a command line, choosing for each string the form the
// server reads back exactly: atom, quoted string or literal.
type builder struct {
	c      *Client
	cur    []byte
	chunks []chunk
}

func (c *Client) command(name string) *builder {
	return &builder{c: c, cur: append(make([]byte, 0, 64), name...)}
}

func (b *builder) raw(s string) *builder {
	b.cur = append(b.cur, s...)
	return b
}

// astring appends s as an atom, a quoted string or a literal.
func (b *builder) astring(s string) *builder {
	switch {
	case imapwire.IsAtom(s) && !strings.EqualFold(s, "NIL"): // Dovecot reads atom NIL as nil, not as a string
		return b.raw(s)
	case quotable(s):
		return b.raw(imapwire.Quote(s))
	}
	n := strconv.Itoa(len(s))
	if b.c.hasCap("LITERAL+") || (b.c.hasCap("LITERAL-") && len(s) <= 4096) {
		return b.raw("{" + n + "+}\r\n" + s)
	}
	b.raw("{" + n + "}\r\n")
	b.chunks = append(b.chunks, chunk{text: b.cur, syncLit: true})
	b.cur = append([]byte(nil), s...)
	return b
}

// quotable reports whether s may be sent as a quoted string: 7-bit text
// without CR, LF or NUL (RFC 3501 QUOTED-CHAR), and short.
func quotable(s string) bool {
	if len(s) > 1000 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == 0 || c == '\r' || c == '\n' || c >= 0x80 {
			return false
		}
	}
	return true
}

func (b *builder) done() []chunk {
	b.raw("\r\n")
	return append(b.chunks, chunk{text: b.cur})
}

// hasCap reports whether the server is known to offer capability name.
func (c *Client) hasCap(name string) bool {
	for _, s := range c.caps {
		if s == name {
			return true
		}
	}
	return false
}

// run sends a command and reads responses until its tagged answer, which it
// returns (OK, NO or BAD alike). Untagged responses go first to hook, if
// set, which reports whether it took them; the rest are handled as at any
// time. Any error is fatal to the connection.
func (c *Client) run(ctx context.Context, name string, chunks []chunk, hook func(*resp) bool) (*resp, error) {
	if err := c.usable(); err != nil {
		return nil, err
	}
	if c.idleTag != "" {
		return nil, fmt.Errorf("imapnotify: %s during IDLE: call Done first", name)
	}
	stop := c.watchContext(ctx)
	r, err := c.exchange(ctx, chunks, hook)
	stop()
	if err != nil {
		return nil, c.fail(ctxErr(ctx, fmt.Errorf("imapnotify: %s: %w", name, err)))
	}
	if r.kind == "OK" && r.code == "CAPABILITY" {
		c.caps = words(r.codeArg)
	}
	return r, nil
}

func (c *Client) exchange(ctx context.Context, chunks []chunk, hook func(*resp) bool) (*resp, error) {
	tag := c.nextTag()
	chunks[0].text = append([]byte(tag+" "), chunks[0].text...)
	for _, ch := range chunks {
		if err := c.write(ctx, ch.text); err != nil {
			return nil, err
		}
		for ch.syncLit {
			r, tooLong, err := c.readResponse(ctx)
			if err != nil {
				return nil, err
			}
			switch r.tag {
			case "+":
				ch.syncLit = false
			case tag:
				return r, nil // refused before the literal's data
			default:
				if err := c.handle(r, tooLong, hook); err != nil {
					return nil, err
				}
			}
		}
	}
	return c.answerTo(ctx, tag, hook)
}

// answerTo reads responses until the tagged answer to the command tag,
// handling the others (see run).
func (c *Client) answerTo(ctx context.Context, tag string, hook func(*resp) bool) (*resp, error) {
	for {
		r, tooLong, err := c.readResponse(ctx)
		if err != nil {
			return nil, err
		}
		if r.tag == tag {
			return r, checkTagged(r)
		}
		if err := c.handle(r, tooLong, hook); err != nil {
			return nil, err
		}
	}
}

// checkTagged refuses a tagged response that no command may get.
func checkTagged(r *resp) error {
	if !isStatusKind(r.kind) || r.kind == "BYE" || r.kind == "PREAUTH" {
		return fmt.Errorf("%w: tagged %s", errProtocol, r.kind)
	}
	return nil
}

var errProtocol = errors.New("protocol error")

// handle deals with a response that does not answer the running command.
func (c *Client) handle(r *resp, tooLong bool, hook func(*resp) bool) error {
	switch {
	case r.tag == "+":
		return fmt.Errorf("%w: continuation request nothing waits for", errProtocol)
	case r.tag != "*" && r.tag == c.noopTag:
		c.noopTag = ""
		if r.kind != "OK" {
			c.log.Warn("imapnotify: keepalive NOOP refused", "status", r.kind, "text", r.text)
		}
		return nil
	case r.tag != "*":
		return fmt.Errorf("%w: answer %q to no command", errProtocol, r.tag)
	case tooLong && r.kind == "FETCH":
		// Its flags were cut off: an update all the same.
	case tooLong:
		if r.kind == "STATUS" || r.kind == "LIST" {
			c.lost("a " + r.kind + " longer than the response limit")
		} else {
			c.log.Debug("imapnotify: skipped a long response", "kind", r.kind)
		}
		return nil
	case hook != nil && hook(r):
		return nil
	}
	return c.untagged(r)
}

// untagged handles an untagged response that nothing running asked for.
func (c *Client) untagged(r *resp) error {
	switch r.kind {
	case "OK":
		switch r.code {
		case "CAPABILITY":
			c.caps = words(r.codeArg)
		case "NOTIFICATIONOVERFLOW":
			c.notifying, c.armed = false, false
			c.lost("the server turned NOTIFY off")
		}
	case "NO":
		if c.notifying && strings.Contains(strings.ToUpper(r.text), "NOTIFY") {
			// Dovecot: "* NO NOTIFY error, some events may have got lost"
			c.lost("the server says: " + r.text)
			return nil
		}
		c.log.Warn("imapnotify: server warning", "code", r.code, "text", r.text)
	case "BAD":
		c.log.Warn("imapnotify: server error", "code", r.code, "text", r.text)
	case "BYE":
		return fmt.Errorf("%w: %s", ErrBye, r.text)
	case "CAPABILITY":
		c.caps = words(string(imapwire.TrimCRLF(r.data)))
	case "ENABLED":
		for _, w := range words(string(imapwire.TrimCRLF(r.data))) {
			if w == "CONDSTORE" {
				c.condstore = true
			}
		}
	case "EXISTS", "EXPUNGE", "FETCH":
		if !r.hasNum || !c.selected {
			c.log.Debug("imapnotify: ignored response", "kind", r.kind)
			return nil
		}
		c.update(r)
	case "STATUS":
		c.onStatus(r.data)
	case "LIST":
		c.onList(r.data)
	default:
		c.log.Debug("imapnotify: ignored response", "kind", r.kind)
	}
	return nil
}

// lost notes that notifications were lost: Next returns ErrOverflow.
func (c *Client) lost(why string) {
	if c.boxes == nil {
		return // not watching: nothing to lose
	}
	if !c.overflow {
		c.log.Info("imapnotify: notifications lost; catching up", "why", why)
	}
	c.overflow = true
}

// write sends p with a deadline of CommandTimeout; ctx ending interrupts it.
func (c *Client) write(ctx context.Context, p []byte) error {
	if err := c.raw.SetWriteDeadline(time.Now().Add(c.opts.CommandTimeout)); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if _, err := c.rw.Write(p); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	c.lastWrite = time.Now()
	return nil
}
