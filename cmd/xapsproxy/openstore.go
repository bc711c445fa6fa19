package main

import (
	"context"
	"time"

	"github.com/xapsproxy/xapsproxy/config"
	"github.com/xapsproxy/xapsproxy/store"
)

// postgresOpenTimeout bounds connecting to PostgreSQL and migrating its
// schema: a server that does not answer (packets dropped by a firewall)
// stops the command with an error instead of hanging it (pgx's own
// default is two minutes a connection). connect_timeout in the URL
// shortens it.
const postgresOpenTimeout = 30 * time.Second

// openStore opens the configured store, a SQLite file or a PostgreSQL
// database, and brings its schema up to date. Its error is one line that
// names the key (storeError). It takes no lock: see lockStore.
func openStore(ctx context.Context, cfg *config.Config) (store.Store, error) {
	// Through variables of the concrete types: a nil *SQLite in the Store
	// interface would not be nil to its caller.
	if cfg.Store.IsPostgres() {
		ctx, cancel := context.WithTimeout(ctx, postgresOpenTimeout)
		defer cancel()
		pg, err := store.OpenPostgres(ctx, cfg.Store.Postgres)
		if err != nil {
			return nil, storeError(cfg.Store, err)
		}
		return pg, nil
	}
	st, err := store.Open(ctx, cfg.Store.Path)
	if err != nil {
		return nil, storeError(cfg.Store, err)
	}
	return st, nil
}

// lockStore takes the hold that makes serve the one pusher of a SQLite
// store (store.Lock), for serve and import-xapsd. A PostgreSQL store has
// no file to lock, and several instances may use it at once: lockStore
// returns a nil lock and no error.
func lockStore(cfg *config.Config) (*store.LockFile, error) {
	if cfg.Store.IsPostgres() {
		return nil, nil
	}
	l, err := store.Lock(cfg.Store.Path)
	if err != nil {
		return nil, storeError(cfg.Store, err)
	}
	return l, nil
}
