package store

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// PostgresInfo is what InspectPostgres found in a PostgreSQL database.
type PostgresInfo struct {
	ServerVersion string // the server's server_version, e.g. "15.14 (Debian 15.14-0+deb12u1)"
	Info                 // Version 0: no xapsproxy schema yet
}

// PostgresSchemaVersion is the schema version OpenPostgres brings a
// database to (numbered apart from SQLite's, SchemaVersion).
func PostgresSchemaVersion() int { return pgSchemaVersion() }

// InspectPostgres connects to the database at url and reads it without
// changing it: one connection, one read-only transaction, no migration
// and no lock, so it may run beside instances using the database. At a
// schema version other than PostgresSchemaVersion it reports the version
// only, since the tables may not be as this program knows them. Its
// errors never hold the URL's password; a failure to connect is a
// *pgconn.ConnectError underneath (errors.As), a refusal by the server a
// *pgconn.PgError.
func InspectPostgres(ctx context.Context, url string) (PostgresInfo, error) {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return PostgresInfo{}, &inspectError{msg: "store: inspect postgres: invalid URL", err: err}
	}
	info, err := inspectPostgres(ctx, cfg)
	if err != nil {
		msg := "store: inspect postgres: " + err.Error()
		if cfg.Password != "" {
			msg = strings.ReplaceAll(msg, cfg.Password, "xxxxx")
		}
		return PostgresInfo{}, &inspectError{msg: msg, err: err}
	}
	return info, nil
}

func inspectPostgres(ctx context.Context, cfg *pgx.ConnConfig) (PostgresInfo, error) {
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return PostgresInfo{}, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{AccessMode: pgx.ReadOnly})
	if err != nil {
		return PostgresInfo{}, err
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	var info PostgresInfo
	var hasSchema bool
	if err := tx.QueryRow(ctx, `SELECT current_setting('server_version'), to_regclass('xapsproxy_schema') IS NOT NULL`).
		Scan(&info.ServerVersion, &hasSchema); err != nil {
		return PostgresInfo{}, err
	}
	if !hasSchema {
		return info, nil
	}
	err = tx.QueryRow(ctx, `SELECT version FROM xapsproxy_schema`).Scan(&info.Version)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return PostgresInfo{}, fmt.Errorf("read the schema version: %w", err)
	}
	if info.Version != pgSchemaVersion() {
		return info, nil
	}
	rows, err := tx.Query(ctx, `SELECT user_name, count(*) FROM registrations GROUP BY user_name ORDER BY user_name`)
	if err != nil {
		return PostgresInfo{}, fmt.Errorf("read the registrations: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var user string
		var n int
		if err := rows.Scan(&user, &n); err != nil {
			return PostgresInfo{}, fmt.Errorf("read the registrations: %w", err)
		}
		info.Users = append(info.Users, user)
		info.Devices += n
		info.MaxDevices = max(info.MaxDevices, n)
	}
	if err := rows.Err(); err != nil {
		return PostgresInfo{}, fmt.Errorf("read the registrations: %w", err)
	}
	return info, nil
}

// inspectError has a message without the password; err is kept for
// errors.Is and As only.
type inspectError struct {
	msg string
	err error
}

func (e *inspectError) Error() string { return e.msg }
func (e *inspectError) Unwrap() error { return e.err }
