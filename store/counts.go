package store

import (
	"context"
	"database/sql/driver"
)

// Counts is how much the store holds, for monitoring.
type Counts struct {
	Registrations int // devices registered, one per (user, device token)
	Users         int // users with at least one registration
	Outbox        int // pushes owed (outbox entries)
}

// Counts counts the registrations and the outbox. The outbox count reads
// every mailbox's row (the outbox has no index of its own): cheap at a
// scrape every few seconds, not for a hot path.
func (s *SQLite) Counts(ctx context.Context) (Counts, error) {
	var c Counts
	err := s.r.QueryRowContext(ctx,
		`SELECT COUNT(*), COUNT(DISTINCT user) FROM registrations`).Scan(&c.Registrations, &c.Users)
	if err == nil {
		err = s.r.QueryRowContext(ctx,
			`SELECT COUNT(new_push) + COUNT(changed_push) FROM mailbox_state
			WHERE new_push IS NOT NULL OR changed_push IS NOT NULL`).Scan(&c.Outbox)
	}
	return c, wrap("counts", err)
}

// PingWrite reports whether the store can be written: it takes SQLite's
// write lock on the writers' connection (BEGIN IMMEDIATE) and rolls back,
// writing nothing. It waits behind the writes queued before it, so a store
// whose writes are stuck fails it when ctx expires.
func (s *SQLite) PingWrite(ctx context.Context) error {
	return wrap("write check", s.pingWrite(ctx))
}

func (s *SQLite) pingWrite(ctx context.Context) error {
	conn, err := s.w.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, `BEGIN IMMEDIATE`); err != nil {
		return err
	}
	// The rollback must happen whatever ctx says: the connection goes back
	// to the pool the writes share.
	if _, err := conn.ExecContext(context.WithoutCancel(ctx), `ROLLBACK`); err != nil {
		// Not back in the pool with a transaction open.
		conn.Raw(func(any) error { return driver.ErrBadConn })
		return err
	}
	return nil
}
