package store

import (
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"
)

// CommitMailbox stores the state of a mailbox and the push it causes in one
// transaction, shared with other writes made at the same moment (see
// write). The push replaces an entry for the same user, mailbox and kind.
func (s *SQLite) CommitMailbox(ctx context.Context, user, mailbox string, st *MailboxState, push *OutboxEntry) (int64, error) {
	id, err := s.commitMailbox(ctx, user, mailbox, st, push)
	return id, wrap("commit mailbox", err)
}

func (s *SQLite) commitMailbox(ctx context.Context, user, mailbox string, st *MailboxState, push *OutboxEntry) (int64, error) {
	if user == "" || mailbox == "" {
		return 0, fmt.Errorf("%w: empty user or mailbox", errInvalid)
	}
	var at []sql.NullInt64
	if push != nil {
		var err error
		if at, err = nanos(push.At); err != nil {
			return 0, err
		}
		if !at[0].Valid {
			return 0, fmt.Errorf("%w: outbox entry without a time", errInvalid)
		}
	}
	var validity, next sql.NullInt64
	if st != nil {
		validity = sql.NullInt64{Int64: int64(st.UIDValidity), Valid: true}
		next = sql.NullInt64{Int64: int64(st.UIDNext), Valid: true}
	}
	if st == nil && push == nil {
		return 0, nil // nothing to commit
	}
	var id int64
	err := s.writeRelaxed(ctx, func(ctx context.Context, tx *sql.Tx) error {
		if push == nil {
			_, err := tx.StmtContext(ctx, s.stmts.upsertState).ExecContext(ctx, user, mailbox, validity, next)
			return err
		}
		stmt := s.stmts.commitNew
		if push.Changed {
			stmt = s.stmts.commitChanged
		}
		// Above every id given since the store was opened, and every id
		// still owed: never one a Pusher holds for another push.
		id = s.lastID.Add(1)
		_, err := tx.StmtContext(ctx, stmt).ExecContext(ctx, user, mailbox, validity, next, id, at[0])
		return err
	})
	if err != nil {
		return 0, err
	}
	return id, nil
}

// Outbox returns every entry in the outbox, oldest first.
func (s *SQLite) Outbox(ctx context.Context) ([]OutboxEntry, error) {
	out, err := s.outbox(ctx)
	return out, wrap("outbox", err)
}

// OutboxOf returns the entries in the outbox for user, oldest first: a
// look at the user's rows of the mailbox state's primary key.
func (s *SQLite) OutboxOf(ctx context.Context, user string) ([]OutboxEntry, error) {
	out, err := s.outboxRows(ctx, `
		SELECT user, mailbox, new_push, new_at, changed_push, changed_at FROM mailbox_state
		WHERE user = ? AND (new_push IS NOT NULL OR changed_push IS NOT NULL)`, user)
	return out, wrap("outbox", err)
}

func (s *SQLite) outbox(ctx context.Context) ([]OutboxEntry, error) {
	// Read at start only: a scan of the mailboxes, no index to keep up.
	return s.outboxRows(ctx, `
		SELECT user, mailbox, new_push, new_at, changed_push, changed_at FROM mailbox_state
		WHERE new_push IS NOT NULL OR changed_push IS NOT NULL`)
}

func (s *SQLite) outboxRows(ctx context.Context, query string, args ...any) ([]OutboxEntry, error) {
	rows, err := s.r.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []OutboxEntry
	for rows.Next() {
		var user, mailbox string
		var newID, newAt, changedID, changedAt sql.NullInt64
		if err := rows.Scan(&user, &mailbox, &newID, &newAt, &changedID, &changedAt); err != nil {
			return nil, err
		}
		if newID.Valid {
			out = append(out, OutboxEntry{ID: newID.Int64, User: user, Mailbox: mailbox, At: fromNanos(newAt)})
		}
		if changedID.Valid {
			out = append(out, OutboxEntry{ID: changedID.Int64, User: user, Mailbox: mailbox, Changed: true, At: fromNanos(changedAt)})
		}
	}
	slices.SortFunc(out, func(a, b OutboxEntry) int { return cmp.Compare(a.ID, b.ID) })
	return out, rows.Err()
}

// FinishPushes records push outcomes and removes the outbox entries done, in
// one transaction shared with other writes made at the same moment.
func (s *SQLite) FinishPushes(ctx context.Context, records []PushRecord, done []OutboxEntry) error {
	if len(records) == 0 && len(done) == 0 {
		return nil
	}
	type rec struct {
		user, token, result string
		at                  sql.NullInt64
	}
	recs := make([]rec, len(records))
	for i, r := range records {
		t, err := nanos(r.At)
		if err != nil {
			return wrap("finish pushes", err)
		}
		recs[i] = rec{r.User, NormalizeToken(r.DeviceToken), r.Result, t[0]}
	}
	// Relaxed: lost on a power cut, it costs a push sent again.
	err := s.writeRelaxed(ctx, func(ctx context.Context, tx *sql.Tx) error {
		if len(recs) > 0 {
			stmt := tx.StmtContext(ctx, s.stmts.recordPush)
			for _, r := range recs {
				if _, err := stmt.ExecContext(ctx, r.at, r.result, r.user, r.token); err != nil {
					return err
				}
			}
		}
		finishNew := tx.StmtContext(ctx, s.stmts.finishNew)
		finishChanged := tx.StmtContext(ctx, s.stmts.finishChanged)
		for _, e := range done {
			stmt := finishNew
			if e.Changed {
				stmt = finishChanged
			}
			if _, err := stmt.ExecContext(ctx, e.User, e.Mailbox, e.ID); err != nil {
				return err
			}
		}
		return nil
	})
	return wrap("finish pushes", err)
}

// maxParams bounds the users of one RegistrationsOf query (SQLite allows
// 32 766 parameters; smaller queries keep each read short).
const maxParams = 500

// RegistrationsOf returns the registrations of users, by user, in one query
// per maxParams users.
func (s *SQLite) RegistrationsOf(ctx context.Context, users []string) (map[string][]Registration, error) {
	out := make(map[string][]Registration, len(users))
	for len(users) > 0 {
		n := min(len(users), maxParams)
		args := make([]any, n)
		for i, u := range users[:n] {
			args[i] = u
		}
		q := selectRegistrations + ` WHERE user IN (?` + strings.Repeat(`, ?`, n-1) + `) ORDER BY user, device_token`
		regs, err := s.query(ctx, q, args...)
		if err != nil {
			return nil, wrap("registrations of users", err)
		}
		for _, r := range regs {
			out[r.User] = append(out[r.User], r)
		}
		users = users[n:]
	}
	return out, nil
}
