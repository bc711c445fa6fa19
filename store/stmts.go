package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// statements are the writes made for every mail and every push, prepared
// once when the store opens: parsing them again on each write cost an
// eighth of the push stage's CPU at 10 000 pushes a second. Writes use them
// through tx.StmtContext, on the writer's one connection.
type statements struct {
	upsertState   *sql.Stmt
	replaceOutbox *sql.Stmt
	recordPush    *sql.Stmt
	deleteOutbox  *sql.Stmt
}

func (st *statements) prepare(ctx context.Context, w *sql.DB) error {
	for _, s := range []struct {
		to *(*sql.Stmt)
		q  string
	}{
		{&st.upsertState, `
			INSERT INTO mailbox_state (user, mailbox, uid_validity, uid_next) VALUES (?, ?, ?, ?)
			ON CONFLICT (user, mailbox) DO UPDATE SET
				uid_validity = excluded.uid_validity,
				uid_next     = excluded.uid_next`},
		// REPLACE deletes the older entry of the same kind and inserts a
		// new row, whose AUTOINCREMENT id is above every id ever given.
		{&st.replaceOutbox, `REPLACE INTO outbox (user, mailbox, changed, at) VALUES (?, ?, ?, ?) RETURNING id`},
		{&st.recordPush, `UPDATE registrations SET last_push = ?, last_push_result = ? WHERE user = ? AND device_token = ?`},
		{&st.deleteOutbox, `DELETE FROM outbox WHERE id = ?`},
	} {
		stmt, err := w.PrepareContext(ctx, s.q)
		if err != nil {
			st.close()
			return fmt.Errorf("prepare statements: %w", err)
		}
		*s.to = stmt
	}
	return nil
}

func (st *statements) close() error {
	var errs []error
	for _, s := range []*sql.Stmt{st.upsertState, st.replaceOutbox, st.recordPush, st.deleteOutbox} {
		if s != nil {
			errs = append(errs, s.Close())
		}
	}
	return errors.Join(errs...)
}
