package store

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
)

// SetMailboxState stores the state of one mailbox.
func (p *Postgres) SetMailboxState(ctx context.Context, user, mailbox string, st MailboxState) error {
	_, err := p.commitMailbox(ctx, user, mailbox, &st, nil)
	return p.wrap("set mailbox state", err)
}

// CommitMailbox stores the state of a mailbox and the push it causes in one
// statement. The push replaces an entry for the same user, mailbox and
// kind; its id comes from the sequence outbox_id, drawn once the row is
// locked (in the update), so that of two instances committing to one
// mailbox at once, the entry left owed has the higher id.
func (p *Postgres) CommitMailbox(ctx context.Context, user, mailbox string, st *MailboxState, push *OutboxEntry) (int64, error) {
	id, err := p.commitMailbox(ctx, user, mailbox, st, push)
	return id, p.wrap("commit mailbox", err)
}

// pgCommit are CommitMailbox's statements: state only, state (unless NULL)
// with a new-mail push, state (unless NULL) with a push for changes.
var pgCommit = [3]string{`
	INSERT INTO mailbox_state (user_name, mailbox, uid_validity, uid_next) VALUES ($1, $2, $3, $4)
	ON CONFLICT (user_name, mailbox) DO UPDATE SET
		uid_validity = excluded.uid_validity,
		uid_next     = excluded.uid_next`, `
	INSERT INTO mailbox_state (user_name, mailbox, uid_validity, uid_next, new_push, new_at)
	VALUES ($1, $2, $3, $4, nextval('outbox_id'), $5)
	ON CONFLICT (user_name, mailbox) DO UPDATE SET
		uid_validity = coalesce(excluded.uid_validity, mailbox_state.uid_validity),
		uid_next     = coalesce(excluded.uid_next, mailbox_state.uid_next),
		new_push     = nextval('outbox_id'),
		new_at       = excluded.new_at
	RETURNING new_push`, `
	INSERT INTO mailbox_state (user_name, mailbox, uid_validity, uid_next, changed_push, changed_at)
	VALUES ($1, $2, $3, $4, nextval('outbox_id'), $5)
	ON CONFLICT (user_name, mailbox) DO UPDATE SET
		uid_validity = coalesce(excluded.uid_validity, mailbox_state.uid_validity),
		uid_next     = coalesce(excluded.uid_next, mailbox_state.uid_next),
		changed_push = nextval('outbox_id'),
		changed_at   = excluded.changed_at
	RETURNING changed_push`,
}

func (p *Postgres) commitMailbox(ctx context.Context, user, mailbox string, st *MailboxState, push *OutboxEntry) (int64, error) {
	if user == "" || mailbox == "" {
		return 0, fmt.Errorf("%w: empty user or mailbox", errInvalid)
	}
	if push != nil && push.At.IsZero() {
		return 0, fmt.Errorf("%w: outbox entry without a time", errInvalid)
	}
	if push != nil {
		if err := checkTimes(push.At); err != nil {
			return 0, err
		}
	}
	var validity, next pgtype.Int8
	if st != nil {
		validity = pgtype.Int8{Int64: int64(st.UIDValidity), Valid: true}
		next = pgtype.Int8{Int64: int64(st.UIDNext), Valid: true}
	}
	switch {
	case push == nil && st == nil:
		return 0, nil // nothing to commit
	case push == nil:
		_, err := p.pool.Exec(ctx, pgCommit[0], user, mailbox, validity, next)
		return 0, err
	}
	q := pgCommit[1]
	if push.Changed {
		q = pgCommit[2]
	}
	var id int64
	if err := p.pool.QueryRow(ctx, q, user, mailbox, validity, next, push.At).Scan(&id); err != nil {
		return 0, err
	}
	return id, nil
}

const pgSelectOutbox = `
	SELECT user_name, mailbox, new_push, new_at, changed_push, changed_at FROM mailbox_state
	WHERE (new_push IS NOT NULL OR changed_push IS NOT NULL)`

// Outbox returns every entry in the outbox, oldest first.
func (p *Postgres) Outbox(ctx context.Context) ([]OutboxEntry, error) {
	out, err := p.outboxRows(ctx, pgSelectOutbox)
	return out, p.wrap("outbox", err)
}

// OutboxOf returns the entries in the outbox for user, oldest first.
func (p *Postgres) OutboxOf(ctx context.Context, user string) ([]OutboxEntry, error) {
	out, err := p.outboxRows(ctx, pgSelectOutbox+` AND user_name = $1`, user)
	return out, p.wrap("outbox", err)
}

func (p *Postgres) outboxRows(ctx context.Context, q string, args ...any) ([]OutboxEntry, error) {
	rows, err := p.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []OutboxEntry
	for rows.Next() {
		var user, mailbox string
		var newID, changedID pgtype.Int8
		var newAt, changedAt pgtype.Timestamptz
		if err := rows.Scan(&user, &mailbox, &newID, &newAt, &changedID, &changedAt); err != nil {
			return nil, err
		}
		if newID.Valid {
			out = append(out, OutboxEntry{ID: newID.Int64, User: user, Mailbox: mailbox, At: fromPG(newAt)})
		}
		if changedID.Valid {
			out = append(out, OutboxEntry{ID: changedID.Int64, User: user, Mailbox: mailbox, Changed: true, At: fromPG(changedAt)})
		}
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b OutboxEntry) int { return cmp.Compare(a.ID, b.ID) })
	return out, nil
}

// FinishPushes records push outcomes and removes the outbox entries done,
// in one transaction sent as one batch. An entry is removed only if its id
// is still the one owed: a newer entry (committed by any instance) stays.
func (p *Postgres) FinishPushes(ctx context.Context, records []PushRecord, done []OutboxEntry) error {
	if len(records) == 0 && len(done) == 0 {
		return nil
	}
	var b pgx.Batch
	for _, r := range records {
		if err := checkTimes(r.At); err != nil {
			return p.wrap("finish pushes", err)
		}
		b.Queue(`UPDATE registrations SET last_push = $1, last_push_result = $2 WHERE user_name = $3 AND device_token = $4`,
			pgTime(r.At), r.Result, r.User, NormalizeToken(r.DeviceToken))
	}
	for _, e := range done {
		q := `UPDATE mailbox_state SET new_push = NULL, new_at = NULL WHERE user_name = $1 AND mailbox = $2 AND new_push = $3`
		if e.Changed {
			q = `UPDATE mailbox_state SET changed_push = NULL, changed_at = NULL WHERE user_name = $1 AND mailbox = $2 AND changed_push = $3`
		}
		b.Queue(q, e.User, e.Mailbox, e.ID)
	}
	err := p.begin(ctx, func(tx pgx.Tx) error {
		return tx.SendBatch(ctx, &b).Close()
	})
	return p.wrap("finish pushes", err)
}

// SetCredential stores the sealed credential of user, replacing any other.
func (p *Postgres) SetCredential(ctx context.Context, user string, sealed []byte) error {
	if user == "" || len(sealed) == 0 {
		return p.wrap("set credential", fmt.Errorf("%w: empty user or credential", errInvalid))
	}
	_, err := p.pool.Exec(ctx, `
		INSERT INTO credentials (user_name, sealed, updated) VALUES ($1, $2, now())
		ON CONFLICT (user_name) DO UPDATE SET
			sealed  = excluded.sealed,
			updated = excluded.updated`,
		user, sealed)
	return p.wrap("set credential", err)
}

// Credential returns the sealed credential of user, or an error wrapping
// ErrNotFound.
func (p *Postgres) Credential(ctx context.Context, user string) ([]byte, error) {
	var sealed []byte
	err := p.pool.QueryRow(ctx, `SELECT sealed FROM credentials WHERE user_name = $1`, user).Scan(&sealed)
	if errors.Is(err, pgx.ErrNoRows) {
		err = ErrNotFound
	}
	if err != nil {
		return nil, p.wrap("credential", err)
	}
	return sealed, nil
}

// DeleteCredential removes the credential of user if it is still sealed,
// byte for byte (bytea equality), and reports whether it did.
func (p *Postgres) DeleteCredential(ctx context.Context, user string, sealed []byte) (bool, error) {
	tag, err := p.pool.Exec(ctx, `DELETE FROM credentials WHERE user_name = $1 AND sealed = $2`, user, sealed)
	if err != nil {
		return false, p.wrap("delete credential", err)
	}
	return tag.RowsAffected() > 0, nil
}
