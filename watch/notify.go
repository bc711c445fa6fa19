package watch

import (
	"context"
	"errors"
	"fmt"
	"time"

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
		c, err = w.login(ctx, imapnotify.Options{User: w.user, Logger: w.log})
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
