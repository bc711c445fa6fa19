package cluster

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5/pgxpool"
)

// migrateLock is the advisory lock key the migration holds, so that
// instances starting together do not race to create the tables
// ("xapsclus" as a big-endian int64).
const migrateLock = 0x78617073636c7573

// Channel is the LISTEN/NOTIFY channel of the instances.
const Channel = "xapsproxy_cluster"

// schema is idempotent. Users are keyed by the SHA-256 of their name, so a
// name of any length and any bytes fits a btree key; the name itself is kept
// beside it (bytea: not every string is valid text).
const schema = `
CREATE TABLE IF NOT EXISTS xapsproxy_instances (
	id      text PRIMARY KEY,
	expires timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS xapsproxy_leases (
	user_key  bytea PRIMARY KEY,
	user_name bytea NOT NULL,
	owner     text NOT NULL,
	expires   timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS xapsproxy_leases_owner ON xapsproxy_leases (owner);
`

// Migrate creates the cluster's tables if they are missing. Run calls it;
// it is safe to call from many instances at once.
func Migrate(ctx context.Context, pool *pgxpool.Pool) error {
	tx, err := pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("cluster migration: %w", err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // after Commit, a no-op
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", int64(migrateLock)); err != nil {
		return fmt.Errorf("cluster migration lock: %w", err)
	}
	if _, err := tx.Exec(ctx, schema); err != nil {
		return fmt.Errorf("cluster migration: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("cluster migration commit: %w", err)
	}
	return nil
}
