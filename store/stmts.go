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
	commitNew     *sql.Stmt // state (when not NULL) and a new-mail push owed
	commitChanged *sql.Stmt // state (when not NULL) and a push owed for changes
	recordPush    *sql.Stmt
	finishNew     *sql.Stmt
	finishChanged *sql.Stmt
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
		{&st.commitNew, `
			INSERT INTO mailbox_state (user, mailbox, uid_validity, uid_next, new_push, new_at) VALUES (?, ?, ?, ?, ?, ?)
			ON CONFLICT (user, mailbox) DO UPDATE SET
				uid_validity = coalesce(excluded.uid_validity, uid_validity),
				uid_next     = coalesce(excluded.uid_next, uid_next),
				new_push     = excluded.new_push,
				new_at       = excluded.new_at`},
		{&st.commitChanged, `
			INSERT INTO mailbox_state (user, mailbox, uid_validity, uid_next, changed_push, changed_at) VALUES (?, ?, ?, ?, ?, ?)
			ON CONFLICT (user, mailbox) DO UPDATE SET
				uid_validity = coalesce(excluded.uid_validity, uid_validity),
				uid_next     = coalesce(excluded.uid_next, uid_next),
				changed_push = excluded.changed_push,
				changed_at   = excluded.changed_at`},
		{&st.recordPush, `UPDATE registrations SET last_push = ?, last_push_result = ? WHERE user = ? AND device_token = ?`},
		// Only the entry answered: a newer one (another id) stays owed.
		{&st.finishNew, `UPDATE mailbox_state SET new_push = NULL, new_at = NULL WHERE user = ? AND mailbox = ? AND new_push = ?`},
		{&st.finishChanged, `UPDATE mailbox_state SET changed_push = NULL, changed_at = NULL WHERE user = ? AND mailbox = ? AND changed_push = ?`},
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
	for _, s := range []*sql.Stmt{st.upsertState, st.commitNew, st.commitChanged, st.recordPush, st.finishNew, st.finishChanged} {
		if s != nil {
			errs = append(errs, s.Close())
		}
	}
	return errors.Join(errs...)
}
