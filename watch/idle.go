package watch

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/xapsproxy/xapsproxy/event"
	"github.com/xapsproxy/xapsproxy/internal/imapnotify"
	"github.com/xapsproxy/xapsproxy/store"
)

// idleSession logs in, catches up, and waits in IDLE until the connection
// fails or ctx is done. It returns when it logged in (zero if it did not).
//
// The first registered mailbox (INBOX when registered) is the one in IDLE,
// for up to idleRestart at a time when nothing happens, so that the backend
// can hibernate the connection (Dovecot's imap_hibernate_timeout). An
// EXISTS there ends the IDLE and that mailbox alone is looked at again. The
// other registered mailboxes are looked at with STATUS every PollInterval;
// an account with one mailbox never leaves IDLE for them.
//
// The session's goroutine is the only one that reads or writes the
// connection: it waits in IDLE for the backend's next update, and
// mailboxesChanged interrupts that wait.
func (w *watcher) idleSession(ctx context.Context) (loggedIn time.Time, err error) {
	var c *imapnotify.Client
	err = w.connect(ctx, func(ctx context.Context) (err error) {
		c, err = w.login(ctx, w.m.clientOptions(w.user))
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
	sig := &signals{}
	all := true // look at every mailbox, not only the one in IDLE
	lastPoll := time.Now()
	for {
		mailboxes := w.o.snapshot()
		if all {
			lastPoll = time.Now()
		}
		if err := w.check(ctx, c, sig, mailboxes, all); err != nil {
			return loggedIn, err
		}
		wait, poll := idleRestart, false
		if len(mailboxes) > 1 {
			if next := w.m.opts.PollInterval - time.Since(lastPoll); next < wait {
				wait, poll = max(next, time.Millisecond), true
			}
		}
		err := c.Idle(ctx, wait)
		sig.take(c)
		if err != nil {
			return loggedIn, fmt.Errorf("idle: %w", err)
		}
		w.watching()
		all, err = w.idle(ctx, c, sig, mailboxes[0], poll)
		if err != nil {
			return loggedIn, err
		}
		err = c.Done(ctx)
		sig.take(c)
		if err != nil {
			return loggedIn, fmt.Errorf("idle: %w", err)
		}
	}
}

// idle waits in IDLE on mb, until the backend reports an EXISTS, the IDLE
// has lasted its time or the registered mailboxes change; flag changes and
// expunges are reported to the owner as they come, without leaving IDLE.
// It returns whether every mailbox is to be looked at next: when the
// mailboxes changed, or when the time ran out and poll is set.
//
// The wait has no context of its own, which would cost every account a
// context, a timer and the registrations between them: mailboxesChanged
// interrupts it (Client.Interrupt), the IDLE's time ends it, and ctx ending
// closes the connection (see idleSession).
func (w *watcher) idle(ctx context.Context, c *imapnotify.Client, sig *signals, mb string, poll bool) (all bool, err error) {
	if !w.setInterrupt(c.Interrupt) {
		<-w.changed // signalled already
		return true, nil
	}
	defer w.setInterrupt(nil)
	for {
		if sig.exists {
			sig.exists = false
			return false, nil
		}
		if sig.changed {
			// Flags changed or messages went away in the mailbox in IDLE:
			// nothing to look up, IDLE goes on.
			w.flagsChanged(ctx, sig, mb)
		}
		u, err := c.NextUpdate(context.WithoutCancel(ctx))
		switch {
		case err == nil:
			sig.apply(u)
			continue
		case ctx.Err() != nil:
			return false, ctx.Err()
		case errors.Is(err, imapnotify.ErrInterrupted):
			select {
			case <-w.changed:
				return true, nil
			default:
				continue // an interrupt meant for an earlier wait
			}
		case errors.Is(err, imapnotify.ErrIdleExpired):
			return poll, nil
		}
		return false, fmt.Errorf("idle: %w", err)
	}
}

// signals are what a connection in IDLE hears from the backend about the
// mailbox in IDLE, along with commands or in IDLE: exists on an EXISTS (new
// mail, or a count change), changed on an EXPUNGE or on a FETCH of a
// message that was there at the last look (flags changed; Dovecot also
// sends the flags of new messages).
type signals struct {
	exists, changed bool
	// looked is the number of messages at the last look at the mailbox in
	// IDLE, less those expunged since.
	looked uint32
}

// apply takes one update from the backend.
func (s *signals) apply(u imapnotify.Update) {
	switch u.Kind {
	case imapnotify.UpdateExists:
		s.exists = true
	case imapnotify.UpdateExpunge:
		if s.looked > 0 {
			s.looked--
		}
		s.changed = true
	case imapnotify.UpdateFetch:
		// \Recent alone is what Dovecot sends for a message when an IDLE
		// connection comes back from hibernation, with no change behind
		// it. (A change that leaves only \Recent, such as marking the one
		// new message unread again, is missed; the next event brings it.)
		if !u.OnlyRecent && u.Num <= s.looked {
			s.changed = true
		}
	case imapnotify.UpdateLost:
		s.exists, s.changed = true, true
	}
}

// take applies the updates the backend sent along with the last command.
func (s *signals) take(c *imapnotify.Client) {
	for u, ok := c.TakeUpdate(); ok; u, ok = c.TakeUpdate() {
		s.apply(u)
	}
}

// flagsChanged reports a change in the mailbox in IDLE, if the backend
// signalled one.
func (w *watcher) flagsChanged(ctx context.Context, sig *signals, mb string) {
	if sig.changed {
		sig.changed = false
		w.o.apply(ctx, event.Hint{User: w.user, Mailbox: decodedName(mb), What: event.Flags})
	}
}

// check looks at the registered mailboxes (all, or only the first) and
// reports what it sees to the owner, leaving the first mailbox selected for
// IDLE. Mailboxes the backend refuses (e.g. deleted ones) are skipped.
func (w *watcher) check(ctx context.Context, c *imapnotify.Client, sig *signals, mailboxes []string, all bool) error {
	// Other mailboxes first, so STATUS never targets the selected one
	// (RFC 9051 section 6.3.11).
	for i := len(mailboxes) - 1; i >= 0; i-- {
		if i > 0 && !all {
			continue
		}
		mb := mailboxes[i]
		name, ok := backendName(mb)
		if !ok {
			w.log.Warn("mailbox name is not valid modified UTF-7, skipped", "mailbox", mb)
			continue
		}
		st, messages, err := look(ctx, c, name, i == 0)
		sig.take(c) // what came before the new look
		if err := skippable(err); err != nil {
			return fmt.Errorf("check %s: %w", mb, err)
		}
		if i == 0 && err == nil {
			sig.looked = messages
		}
		if err != nil {
			w.log.Debug("mailbox refused by the backend", "mailbox", mb, "err", err)
			continue
		}
		if i == 0 {
			// Changes the backend reported with the new mail (Dovecot
			// sends both after the same delay) go first, so that the
			// new mail's push carries them instead of being followed by
			// a push of their own.
			w.flagsChanged(ctx, sig, mb)
		}
		w.o.apply(ctx, event.Hint{User: w.user, Mailbox: decodedName(mb), UIDValidity: st.UIDValidity, UIDNext: st.UIDNext})
	}
	return nil
}

// look asks the backend for one mailbox's UIDVALIDITY and UIDNEXT, name as
// the backend reads it: with EXAMINE for the mailbox to IDLE on (then also
// returning its number of messages), else with STATUS.
func look(ctx context.Context, c *imapnotify.Client, name string, examine bool) (st store.MailboxState, messages uint32, err error) {
	if examine {
		mb, err := c.Examine(ctx, name)
		return store.MailboxState{UIDValidity: mb.UIDValidity, UIDNext: mb.UIDNext}, mb.Messages, err
	}
	uidValidity, uidNext, err := c.Status(ctx, name)
	return store.MailboxState{UIDValidity: uidValidity, UIDNext: uidNext}, 0, err
}
