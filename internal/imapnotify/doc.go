// Package imapnotify is a minimal IMAP client that keeps one connection per
// watched account and tells its owner what changes, in one of two ways:
//
//   - NOTIFY (RFC 5465): no mailbox selected, every watched mailbox's
//     changes reported as hints (event.Hint): new mail, flag changes,
//     expunges, and a mailbox renamed or deleted away;
//   - IDLE (RFC 2177): one mailbox examined (read-only), and what the server
//     says of it on its own reported as updates (Update): EXISTS, EXPUNGE,
//     FETCH.
//
// It is built on internal/imapwire and speaks only what that needs: the
// greeting, STARTTLS, LOGIN, CAPABILITY, ENABLE, STATUS, NOTIFY, EXAMINE,
// IDLE/DONE, NOOP and LOGOUT.
//
// # Use
//
//	c := imapnotify.New(conn, imapnotify.Options{User: "alice"})
//	defer c.Close()
//	c.Greeting(ctx)
//	c.Login(ctx, "alice*master", masterPassword)
//	statuses, err := c.Notify(ctx, []string{"INBOX", "Notes"})
//	// compare statuses with what is stored: that is the catch-up
//	for {
//		h, err := c.Next(ctx) // blocks until something changes
//		...
//	}
//
// or, with IDLE:
//
//	mb, err := c.Examine(ctx, "INBOX") // UIDVALIDITY, UIDNEXT, EXISTS
//	c.Idle(ctx, 29*time.Minute)
//	for {
//		u, err := c.NextUpdate(ctx) // blocks until the server says something
//		...                         // ErrIdleExpired: the 29 minutes are over
//	}
//	c.Done(ctx)
//	for u, ok := c.TakeUpdate(); ok; u, ok = c.TakeUpdate() {
//		... // updates that came with DONE's answer
//	}
//
// Every method except Close and Interrupt must be called from one goroutine
// at a time (the account's owner); that goroutine is the only one that
// reads or writes the connection, so the client starts no goroutine of its
// own. While the owner waits for the server (Next, NextUpdate) the client
// holds no read buffer: the wait reads into a 64-byte array, and a pooled
// 1 KiB buffer is borrowed when data comes and given back once it is all
// consumed. An idle account in NOTIFY costs about 6 KiB: 2 KiB of heap
// (the connection, the client's state) and the owner's goroutine stack
// blocked in Next (TestMemoryPerConnection measures it; TLS adds about
// 5 KiB). Close may be called from any goroutine, any number of times; it
// makes a blocked call return.
//
// # What NOTIFY asks of the server
//
// No mailbox is selected. Notify sends
//
//	NOTIFY SET STATUS (mailboxes (INBOX Notes) (MessageNew MessageExpunge FlagChange MailboxName))
//	    (personal (MailboxName))
//
// so that the server answers with a STATUS of every watched mailbox (the
// catch-up, returned by Notify), then sends an unsolicited STATUS whenever a
// watched mailbox changes and a LIST whenever any mailbox is created,
// renamed or deleted (a rename names only the new name in the filter's
// terms, so the rename of a watched mailbox to an unwatched name is only
// seen through "personal"). When the server offers CONDSTORE, Notify first
// enables it, so that STATUS carries HIGHESTMODSEQ and a flag change is
// visible as such.
//
// Measured against Dovecot 2.3.19 (the tests do it again on every run):
//
//   - a delivery or APPEND gives "* STATUS INBOX (MESSAGES 2 UIDNEXT 3
//     UNSEEN 2 HIGHESTMODSEQ 3)" about 0.5 s later (Dovecot's notify delay);
//     several deliveries within that time give one STATUS;
//   - a flag change in a non-selected mailbox gives "* STATUS INBOX (UNSEEN 1
//     HIGHESTMODSEQ 4)" for \Seen and "(HIGHESTMODSEQ 5)" for any other flag
//     or keyword (with or without ENABLE CONDSTORE), so selecting a mailbox
//     is not needed to see flag changes;
//   - an expunge gives MESSAGES lower with UIDNEXT unchanged;
//   - a rename gives "* LIST () "/" Notes2 ("OLDNAME" (Notes))", a delete
//     "* LIST (\NonExistent) "/" Other";
//   - a NOTIFY SET that replaces another leaves Dovecot silent (nothing is
//     sent until the client's next command), so Notify sends NOTIFY NONE
//     before a new SET;
//   - when Dovecot stops, its imap processes end without a BYE;
//   - Dovecot also repeats a STATUS with nothing changed now and then (when
//     its mailbox list index is refreshed); such repeats give no hint;
//   - Dovecot names mailboxes in NOTIFY responses in UTF-8 (its internal
//     name, as a literal when it is not ASCII: "* STATUS {4}\r\nFét (...)"),
//     not in modified UTF-7, and matches the "mailboxes" filter against that
//     internal name, so a watched "F&AOk-t" in the filter is never matched.
//     So names are matched both ways (as registered and decoded), and when
//     a watched name is not plain ASCII (or contains "&"), or there are more
//     than 100 of them (Dovecot's limit per namespace: NO
//     [NOTIFICATIONOVERFLOW] Too many mailbox names), Notify asks for
//     "(personal (MessageNew MessageExpunge FlagChange MailboxName))"
//     instead and drops what is not watched.
//
// # Hints
//
// A STATUS is compared with the last one seen for that mailbox: UIDNEXT
// higher is Arrived; else MESSAGES lower is Expunged; else UNSEEN or
// HIGHESTMODSEQ changed is Flags; a new UIDVALIDITY, or a mailbox with no
// earlier STATUS, is Unknown; nothing changed is no hint. A LIST with
// \NonExistent, or naming a watched mailbox as its OLDNAME, is Gone; a LIST
// that makes a watched name exist (created, or renamed to it) is Unknown.
// Hint.Mailbox is the watched name decoded to UTF-8, whichever way the
// server spelled it; UIDValidity and UIDNext are the latest the server told.
//
// # IDLE
//
// Examine selects a mailbox read-only and returns its UIDVALIDITY and
// UIDNEXT (the OK codes of the answer) and its number of messages (EXISTS).
// Idle sends IDLE and returns once the server's "+" came; NextUpdate then
// returns, one at a time and in order, the EXISTS, EXPUNGE and FETCH the
// server sends about the selected mailbox (a FETCH with Update.OnlyRecent
// when its FLAGS are \Recent alone), skipping everything else ("* OK Still
// here", RECENT, FLAGS). The same updates sent along with the answer to a
// command (STATUS, DONE, IDLE, another EXAMINE before its [CLOSED]) are
// kept, at most 1000 and then an UpdateLost, for TakeUpdate, which does no
// I/O; EXISTS in EXAMINE's answer is Examine's. A BYE in IDLE is an error
// wrapping ErrBye, fatal like any I/O error; so is the server answering
// IDLE before DONE.
//
// A wait in NextUpdate ends, the connection usable, when its ctx ends,
// when the IDLE has lasted the time Idle gave it (at most Options.MaxIdle,
// 29 minutes by default: servers may end an idle connection after 30) with
// ErrIdleExpired, and when another goroutine calls Interrupt, with
// ErrInterrupted. Interrupt is the cheap way to wake an owner: it needs no
// context per wait, and one that comes while a command runs is kept for
// the next wait rather than disturbing the command. Commands are refused
// (harmlessly) between Idle and Done.
//
// Measured against Dovecot 2.3.19 (TestDovecotIdle and
// TestDovecotIdleHibernated do it again on every run): a delivery gives
// "* 3 EXISTS" and "* 3 RECENT" about 0.5 s later; a flag change "* 1 FETCH
// (FLAGS (\Seen \Recent))"; an expunge "* 2 EXPUNGE" (and RECENT). An
// IDLE connection that hibernated (imap_hibernate_timeout) and is woken by
// a delivery gets "* 2 EXISTS", "* 2 RECENT" and then "* 1 FETCH (FLAGS
// (\Recent))" for a message that did not change.
//
// # Errors and keeping the connection alive
//
// A NO or BAD answer is a *ResponseError (Temporary tells the NO a retry
// may cure: UNAVAILABLE, SERVERBUG, LIMIT, INUSE). ErrOverflow means events
// were lost (NO [NOTIFICATIONOVERFLOW], the server turning NOTIFY off with
// "* OK [NOTIFICATIONOVERFLOW]", Dovecot's "* NO NOTIFY error, some events
// may have got lost", or a notification that could not be parsed): call
// Notify again, whose statuses are the catch-up, or reconnect.
// ErrUnsupported means the server has no usable NOTIFY. Any other error
// from Next, and any I/O or protocol error, leaves the client unusable: the
// connection is closed and every later call returns the same error.
//
// RFC 5465 keeps RFC 3501's inactivity timer: a client in NOTIFY that sends
// no command may be logged out (Dovecot does so after 30 minutes), and
// nothing tells a client whose server vanished. So Next sends a NOOP when
// nothing was sent for Options.Keepalive (25 minutes by default) and gives
// up when its answer does not come within Options.CommandTimeout. Every
// write and every response being read has a deadline.
package imapnotify
