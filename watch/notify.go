package watch

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/xapsproxy/xapsproxy/config"
	"github.com/xapsproxy/xapsproxy/event"
	"github.com/xapsproxy/xapsproxy/internal/imapnotify"
)

// errNoNotify ends a NOTIFY session on a backend that does not offer
// NOTIFY after login: the account is watched with IDLE instead.
var errNoNotify = errors.New("the backend does not offer NOTIFY")

// A backend that loses notifications (NOTIFICATIONOVERFLOW, "* NO NOTIFY
// error") within quickOverflow of each NOTIFY, maxQuickOverflows times in a
// row, ends the session: asking again at once would make a broken or
// hostile server and the proxy trade NOTIFY commands (and log lines) as
// fast as they can, so the watcher's backoff paces the next tries instead.
const (
	quickOverflow     = time.Second
	maxQuickOverflows = 3
)

// notifySession is session for a backend with NOTIFY (RFC 5465): one
// connection, no mailbox selected, told about every registered mailbox at
// once. It logs in, asks for notifications, takes the STATUS the backend
// answers with as the catch-up, and then hands each change to the owner
// until the connection fails, the mailbox set changes (it then asks
// again) or ctx is done.
func (w *watcher) notifySession(ctx context.Context) (loggedIn time.Time, err error) {
	var c *imapnotify.Client
	err = w.connect(ctx, func(ctx context.Context) (err error) {
		c, err = w.loginNotify(ctx)
		return err
	})
	if err != nil {
		return time.Time{}, err
	}
	loggedIn = time.Now()
	defer c.Close()
	defer w.setState(StateConnecting)
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()

	quick := 0 // overflows in a row within quickOverflow of their NOTIFY
	for {
		select {
		case <-w.changed: // taken into account by the Notify below
		default:
		}
		if err := w.notifyAll(ctx, c); err != nil {
			return loggedIn, err
		}
		notified := time.Now()
		w.watching()
		// mailboxesChanged cancels the wait in Next.
		wctx, cancel := context.WithCancel(ctx)
		if !w.setInterrupt(cancel) {
			cancel()
			continue
		}
		err := w.follow(wctx, c)
		w.setInterrupt(nil)
		cancel()
		switch {
		case ctx.Err() != nil:
			return loggedIn, ctx.Err()
		case errors.Is(err, context.Canceled): // the mailboxes changed
		case errors.Is(err, imapnotify.ErrOverflow):
			if time.Since(notified) >= quickOverflow {
				quick = 0
			} else if quick++; quick >= maxQuickOverflows {
				return loggedIn, fmt.Errorf("notify: the backend lost notifications %d times in a row within %v of asking for them", quick, quickOverflow)
			}
			w.log.Info("the backend lost notifications; looking at every mailbox again")
		default:
			return loggedIn, fmt.Errorf("notify: %w", err)
		}
	}
}

// notifyAll asks for notifications about every registered mailbox, and
// gives the owner the state the backend answers with.
func (w *watcher) notifyAll(ctx context.Context, c *imapnotify.Client) error {
	statuses, err := c.Notify(ctx, w.o.snapshot())
	if errors.Is(err, imapnotify.ErrUnsupported) {
		return errNoNotify
	}
	if err != nil {
		return fmt.Errorf("notify: %w", err)
	}
	seen := make(map[string]bool, len(statuses))
	for _, st := range statuses {
		seen[st.Name] = true
		w.o.apply(ctx, event.Hint{User: w.user, Mailbox: st.Mailbox, UIDValidity: st.UIDValidity, UIDNext: st.UIDNext})
	}
	// Dovecot sends no STATUS for an INBOX nothing was delivered to yet
	// (it creates it with the first delivery): ask.
	for _, mb := range w.o.snapshot() {
		if seen[mb] {
			continue
		}
		uidValidity, uidNext, err := c.Status(ctx, mb)
		var re *imapnotify.ResponseError
		switch {
		case errors.As(err, &re):
			continue // refused: no such mailbox
		case err != nil:
			return fmt.Errorf("status %s: %w", mb, err)
		}
		w.o.apply(ctx, event.Hint{User: w.user, Mailbox: decodedName(mb), UIDValidity: uidValidity, UIDNext: uidNext})
	}
	return nil
}

// follow hands the backend's notifications to the owner until an error.
func (w *watcher) follow(ctx context.Context, c *imapnotify.Client) error {
	for {
		h, err := c.Next(ctx)
		if err != nil {
			return err
		}
		w.o.apply(ctx, h)
	}
}

// loginNotify dials the backend for a NOTIFY session and logs in. Like
// dial, failures before the login are unreachableErrors; a refused login
// is a refusedError, and the Credentials are told.
func (w *watcher) loginNotify(ctx context.Context) (*imapnotify.Client, error) {
	m := w.m
	c, err := m.dialNotify(ctx, w.user)
	if err != nil {
		return nil, err
	}
	login, password, err := m.creds.For(ctx, w.user)
	if err == nil {
		err = c.Login(ctx, login, password)
	}
	var re *imapnotify.ResponseError
	switch {
	case err == nil:
		return c, nil
	case errors.As(err, &re) && re.Status == "NO" && !re.Temporary():
		m.creds.Refused(ctx, w.user, login, password)
		err = &refusedError{fmt.Errorf("log in as %s: %w", login, err)}
	case errors.Is(err, ErrNoCredential):
	default:
		err = fmt.Errorf("log in as %s: %w", login, err)
	}
	c.Close()
	return nil, err
}

// dialNotify connects to the backend with the configured TLS and reads the
// greeting, within the same bounds as dial.
func (m *Manager) dialNotify(ctx context.Context, user string) (*imapnotify.Client, error) {
	b := m.opts.Backend
	tc := m.opts.BackendTLS
	if tc == nil {
		tc = b.BaseTLSConfig()
	}
	cctx, cancel := context.WithTimeout(ctx, connectTimeout)
	var d net.Dialer
	conn, err := d.DialContext(cctx, "tcp", b.Address)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, unreachable(fmt.Errorf("dial backend: %w", err))
	}
	gctx, cancel := context.WithTimeoutCause(ctx, m.opts.GreetingTimeout, errGreetingTimeout)
	defer cancel()
	c, err := greetNotify(gctx, conn, b.TLS, tc, imapnotify.Options{User: user, Logger: m.log.With("user", user)})
	switch {
	case err == nil:
		return c, nil
	case ctx.Err() != nil:
		return nil, ctx.Err()
	case errors.Is(context.Cause(gctx), errGreetingTimeout):
		m.stats.greetingTimeouts.Add(1)
		return nil, unreachable(fmt.Errorf("backend greeting: %w (%v)", errGreetingTimeout, m.opts.GreetingTimeout))
	}
	return nil, unreachable(err)
}

// greetNotify sets up TLS as configured and reads the greeting, closing
// conn on failure.
func greetNotify(ctx context.Context, conn net.Conn, mode string, tc *tls.Config, opts imapnotify.Options) (*imapnotify.Client, error) {
	if mode == config.BackendTLSImplicit {
		tlsConn := tls.Client(conn, tc)
		if err := tlsConn.HandshakeContext(ctx); err != nil {
			conn.Close()
			return nil, fmt.Errorf("backend TLS: %w", err)
		}
		conn = tlsConn
	}
	c := imapnotify.New(conn, opts)
	if err := c.Greeting(ctx); err != nil {
		c.Close()
		return nil, fmt.Errorf("backend greeting: %w", err)
	}
	if mode == config.BackendTLSStartTLS {
		if err := c.StartTLS(ctx, tc); err != nil {
			c.Close()
			return nil, fmt.Errorf("backend STARTTLS: %w", err)
		}
	}
	return c, nil
}
