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
	_, err := s.w.ExecContext(ctx, `
		INSERT INTO credentials (user, sealed, updated) VALUES (?, ?, ?)
		ON CONFLICT (user) DO UPDATE SET
			sealed  = excluded.sealed,
			updated = excluded.updated`,
		user, sealed, time.Now().UnixNano())
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
	res, err := s.w.ExecContext(ctx, `DELETE FROM credentials WHERE user = ? AND sealed = ?`, user, sealed)
	if err != nil {
		return false, wrap("delete credential", err)
	}
	n, err := res.RowsAffected()
	return n > 0, wrap("delete credential", err)
}
