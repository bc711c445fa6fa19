package store

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
)

// Register inserts or updates the registration for (r.User, r.DeviceToken),
// as SQLite's does. The device limit is checked and the row written under
// a transaction-scoped advisory lock on the user, so that instances
// registering devices of one user at once cannot together pass the limit.
func (p *Postgres) Register(ctx context.Context, r Registration) error {
	return p.wrap("register", p.register(ctx, r))
}

func (p *Postgres) register(ctx context.Context, r Registration) error {
	r.DeviceToken = NormalizeToken(r.DeviceToken)
	if err := validate(r); err != nil {
		return err
	}
	if r.Registered.IsZero() {
		r.Registered = r.Renewed
	}
	if err := checkTimes(r.Registered, r.Renewed, r.LastPush); err != nil {
		return err
	}
	return p.begin(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1, hashtext($2))`,
			int32(pgUserLockClass), r.User); err != nil {
			return err
		}
		var others int
		if err := tx.QueryRow(ctx,
			`SELECT count(*) FROM registrations WHERE user_name = $1 AND device_token <> $2`,
			r.User, r.DeviceToken).Scan(&others); err != nil {
			return err
		}
		if others >= MaxRegistrationsPerUser {
			return ErrLimit
		}
		_, err := tx.Exec(ctx, `
		INSERT INTO registrations (user_name, device_token, account_id, subtopic, mailboxes,
			version, topic, registered, renewed, last_push, last_push_result)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
		ON CONFLICT (user_name, device_token) DO UPDATE SET
			account_id = excluded.account_id,
			subtopic   = excluded.subtopic,
			mailboxes  = excluded.mailboxes,
			version    = excluded.version,
			topic      = excluded.topic,
			renewed    = excluded.renewed`,
			r.User, r.DeviceToken, r.AccountID, r.Subtopic, r.Mailboxes,
			r.Version, r.Topic, pgTime(r.Registered), pgTime(r.Renewed), pgTime(r.LastPush), r.LastPushResult)
		return err
	})
}

const pgSelectRegistrations = `
	SELECT user_name, device_token, account_id, subtopic, mailboxes, version, topic,
		registered, renewed, last_push, last_push_result
	FROM registrations`

// Registrations returns the registrations of user, ordered by token.
func (p *Postgres) Registrations(ctx context.Context, user string) ([]Registration, error) {
	regs, err := p.query(ctx, pgSelectRegistrations+` WHERE user_name = $1 ORDER BY device_token`, user)
	return regs, p.wrap("registrations", err)
}

// All returns every registration, ordered by user and token.
func (p *Postgres) All(ctx context.Context) ([]Registration, error) {
	regs, err := p.query(ctx, pgSelectRegistrations+` ORDER BY user_name, device_token`)
	return regs, p.wrap("all registrations", err)
}

// RegistrationsOf returns the registrations of users, by user, in one
// query (the users are one array parameter).
func (p *Postgres) RegistrationsOf(ctx context.Context, users []string) (map[string][]Registration, error) {
	out := make(map[string][]Registration, len(users))
	if len(users) == 0 {
		return out, nil
	}
	regs, err := p.query(ctx, pgSelectRegistrations+
		` WHERE user_name = ANY($1) ORDER BY user_name, device_token`, users)
	if err != nil {
		return nil, p.wrap("registrations of users", err)
	}
	for _, r := range regs {
		out[r.User] = append(out[r.User], r)
	}
	return out, nil
}

func (p *Postgres) query(ctx context.Context, q string, args ...any) ([]Registration, error) {
	rows, err := p.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (Registration, error) {
		var (
			r                             Registration
			registered, renewed, lastPush pgtype.Timestamptz
		)
		err := row.Scan(&r.User, &r.DeviceToken, &r.AccountID, &r.Subtopic, &r.Mailboxes,
			&r.Version, &r.Topic, &registered, &renewed, &lastPush, &r.LastPushResult)
		r.Registered, r.Renewed, r.LastPush = fromPG(registered), fromPG(renewed), fromPG(lastPush)
		return r, err
	})
}

// Users returns every user with at least one registration, sorted.
func (p *Postgres) Users(ctx context.Context) ([]string, error) {
	rows, err := p.pool.Query(ctx, `SELECT DISTINCT user_name FROM registrations ORDER BY user_name`)
	if err != nil {
		return nil, p.wrap("users", err)
	}
	users, err := pgx.CollectRows(rows, pgx.RowTo[string])
	return users, p.wrap("users", err)
}

// Delete removes one registration and reports whether it existed.
func (p *Postgres) Delete(ctx context.Context, user, token string) (bool, error) {
	tag, err := p.pool.Exec(ctx,
		`DELETE FROM registrations WHERE user_name = $1 AND device_token = $2`, user, NormalizeToken(token))
	if err != nil {
		return false, p.wrap("delete", err)
	}
	return tag.RowsAffected() > 0, nil
}

// DeleteToken removes every registration of token and returns the users
// that had one, sorted: exactly those whose rows this statement deleted.
func (p *Postgres) DeleteToken(ctx context.Context, token string) ([]string, error) {
	rows, err := p.pool.Query(ctx,
		`DELETE FROM registrations WHERE device_token = $1 RETURNING user_name`, NormalizeToken(token))
	if err != nil {
		return nil, p.wrap("delete token", err)
	}
	users, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, p.wrap("delete token", err)
	}
	slices.Sort(users) // one row per user: (user, token) is the key
	return users, nil
}

// RecordPush remembers the outcome of the latest push to a registration. It
// returns an error wrapping ErrNotFound if the registration does not exist.
func (p *Postgres) RecordPush(ctx context.Context, user, token string, at time.Time, result string) error {
	if err := checkTimes(at); err != nil {
		return p.wrap("record push", err)
	}
	tag, err := p.pool.Exec(ctx,
		`UPDATE registrations SET last_push = $1, last_push_result = $2 WHERE user_name = $3 AND device_token = $4`,
		pgTime(at), result, user, NormalizeToken(token))
	if err == nil && tag.RowsAffected() == 0 {
		err = ErrNotFound
	}
	return p.wrap("record push", err)
}

// MailboxState returns the stored state of one mailbox, or an error
// wrapping ErrNotFound.
func (p *Postgres) MailboxState(ctx context.Context, user, mailbox string) (MailboxState, error) {
	var validity, next int64
	err := p.pool.QueryRow(ctx,
		`SELECT uid_validity, uid_next FROM mailbox_state
		WHERE user_name = $1 AND mailbox = $2 AND uid_next IS NOT NULL`,
		user, mailbox).Scan(&validity, &next)
	if errors.Is(err, pgx.ErrNoRows) {
		err = ErrNotFound
	}
	if err != nil {
		return MailboxState{}, p.wrap("mailbox state", err)
	}
	return MailboxState{UIDValidity: uint32(validity), UIDNext: uint32(next)}, nil
}
