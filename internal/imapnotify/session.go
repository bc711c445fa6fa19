package imapnotify

import (
	"context"
	"crypto/tls"
	"fmt"
	"slices"
	"time"
)

// Greeting reads the server's greeting. A BYE greeting (the server is
// refusing connections) is an error wrapping ErrBye. A CAPABILITY code in
// the greeting is remembered. It waits at most CommandTimeout.
func (c *Client) Greeting(ctx context.Context) error {
	if err := c.usable(); err != nil {
		return err
	}
	stop := c.watchContext(ctx)
	r, _, err := c.readResponse(ctx)
	stop()
	if err != nil {
		return c.fail(ctxErr(ctx, fmt.Errorf("imapnotify: greeting: %w", err)))
	}
	switch {
	case r.tag == "*" && (r.kind == "OK" || r.kind == "PREAUTH"):
		if r.code == "CAPABILITY" {
			c.caps = words(r.codeArg)
		}
		return nil
	case r.tag == "*" && r.kind == "BYE":
		return c.fail(fmt.Errorf("imapnotify: greeting: %w: %s", ErrBye, r.text))
	}
	return c.fail(fmt.Errorf("imapnotify: greeting: %w: %s %s", errProtocol, r.tag, r.kind))
}

// answer turns a tagged NO or BAD into a *ResponseError.
func answer(name string, r *resp) error {
	if r.kind == "OK" {
		return nil
	}
	return &ResponseError{Command: name, Status: r.kind, Code: r.code, Text: r.text}
}

// Login logs in with LOGIN; user and password go as atoms, quoted strings
// or literals, whichever keeps them intact. A refusal is a *ResponseError
// (see Temporary); the connection stays usable after it.
func (c *Client) Login(ctx context.Context, user, password string) error {
	chunks := c.command("LOGIN ").astring(user).raw(" ").astring(password).done()
	c.caps = nil // capabilities change with the login
	r, err := c.run(ctx, "LOGIN", chunks, nil)
	if err != nil {
		return err
	}
	return answer("LOGIN", r)
}

// Capabilities returns the server's capabilities in upper case: those it
// named in its last greeting or LOGIN answer, or else CAPABILITY's answer.
func (c *Client) Capabilities(ctx context.Context) ([]string, error) {
	if c.caps == nil {
		r, err := c.run(ctx, "CAPABILITY", c.command("CAPABILITY").done(), nil)
		if err != nil {
			return nil, err
		}
		if err := answer("CAPABILITY", r); err != nil {
			return nil, err
		}
		if c.caps == nil {
			c.caps = []string{}
		}
	}
	return slices.Clone(c.caps), nil
}

// StartTLS upgrades a plain connection with STARTTLS and a TLS handshake
// under cfg. The capabilities are forgotten (the server names them again).
func (c *Client) StartTLS(ctx context.Context, cfg *tls.Config) error {
	r, err := c.run(ctx, "STARTTLS", c.command("STARTTLS").done(), nil)
	if err != nil {
		return err
	}
	if err := answer("STARTTLS", r); err != nil {
		return err
	}
	if c.br != nil && c.br.Buffered() > 0 {
		// Bytes sent before the handshake would be read as if protected.
		return c.fail(fmt.Errorf("imapnotify: STARTTLS: %w: data after the answer", errProtocol))
	}
	tc := tls.Client(c.raw, cfg)
	if err := c.raw.SetDeadline(time.Now().Add(c.opts.CommandTimeout)); err != nil {
		return c.fail(err)
	}
	if err := tc.HandshakeContext(ctx); err != nil {
		return c.fail(fmt.Errorf("imapnotify: TLS handshake: %w", err))
	}
	c.releaseReader()
	c.rw = tc
	c.caps = nil
	return nil
}

// Status asks for the UIDVALIDITY and UIDNEXT of mailbox, named as on the
// wire (modified UTF-7, as devices register it). A watched mailbox's
// last-known state is updated, without a hint.
func (c *Client) Status(ctx context.Context, mailbox string) (uidValidity, uidNext uint32, err error) {
	var got statusVals
	hook := func(r *resp) bool {
		if r.kind != "STATUS" {
			return false
		}
		name, v, err := parseStatus(r.data)
		if err != nil || !sameMailbox(name, mailbox) {
			return false
		}
		got.merge(v)
		return true
	}
	chunks := c.command("STATUS ").astring(mailbox).raw(" (UIDVALIDITY UIDNEXT)").done()
	r, err := c.run(ctx, "STATUS", chunks, hook)
	if err != nil {
		return 0, 0, err
	}
	if err := answer("STATUS", r); err != nil {
		return 0, 0, err
	}
	if got.have&(haveUIDValidity|haveUIDNext) != haveUIDValidity|haveUIDNext {
		return 0, 0, c.fail(fmt.Errorf("imapnotify: STATUS: %w: no UIDVALIDITY and UIDNEXT in the answer", errProtocol))
	}
	if b := c.lookup(mailbox); b != nil {
		b.seen(got)
	}
	return got.uidValidity, got.uidNext, nil
}

// Logout says LOGOUT, waits for the answer, and closes the connection.
func (c *Client) Logout(ctx context.Context) error {
	hook := func(r *resp) bool { return r.kind == "BYE" }
	r, err := c.run(ctx, "LOGOUT", c.command("LOGOUT").done(), hook)
	c.Close()
	if err != nil {
		return err
	}
	return answer("LOGOUT", r)
}
