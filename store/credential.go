package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// SetCredential stores the sealed credential of user, replacing any other.
func (s *SQLite) SetCredential(ctx context.Context, user string, sealed []byte) error {
	if user == "" || len(sealed) == 0 {
		return wrap("set credential", fmt.Errorf("%w: empty user or credential", errInvalid))
	}
	updated := time.Now().UnixNano()
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `
			INSERT INTO credentials (user, sealed, updated) VALUES (?, ?, ?)
			ON CONFLICT (user) DO UPDATE SET
				sealed  = excluded.sealed,
				updated = excluded.updated`,
			user, sealed, updated)
		return err
	})
	return wrap("set credential", err)
}

// Credential returns the sealed credential of user, or an error wrapping
// ErrNotFound.
func (s *SQLite) Credential(ctx context.Context, user string) ([]byte, error) {
	var sealed []byte
	err := s.r.QueryRowContext(ctx, `SELECT sealed FROM credentials WHERE user = ?`, user).Scan(&sealed)
	if errors.Is(err, sql.ErrNoRows) {
		err = ErrNotFound
	}
	if err != nil {
		return nil, wrap("credential", err)
	}
	return sealed, nil
}

// DeleteCredential removes the credential of user if it is still sealed
// and reports whether it did.
func (s *SQLite) DeleteCredential(ctx context.Context, user string, sealed []byte) (bool, error) {
	n, err := s.writeCount(ctx, `DELETE FROM credentials WHERE user = ? AND sealed = ?`, user, sealed)
	return n > 0, wrap("delete credential", err)
}
