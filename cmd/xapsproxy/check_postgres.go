package main

import (
	"context"
	"fmt"
	"time"

	"github.com/xapsproxy/xapsproxy/config"
	"github.com/xapsproxy/xapsproxy/store"
)

// postgresCheckTimeout bounds check's look at a PostgreSQL store: a
// server that does not answer (a firewall dropping packets) is a finding,
// not a hang.
const postgresCheckTimeout = 10 * time.Second

// checkPostgres connects to the PostgreSQL store and reports the server's
// version, the schema's and the accounts registered. It only reads: the
// schema is migrated by serve, and a running serve may share the database.
func (c *checker) checkPostgres(ctx context.Context) {
	s := c.cfg.Store
	ctx, cancel := context.WithTimeout(ctx, postgresCheckTimeout)
	defer cancel()
	info, err := store.InspectPostgres(ctx, s.Postgres)
	if err != nil {
		c.r.fail(storeError(s, err))
		return
	}
	name := s.Key() + " " + s.Where()
	switch latest := store.PostgresSchemaVersion(); {
	case info.Version == 0:
		c.r.ok("%s: PostgreSQL %s; no schema yet (serve creates it); 0 accounts", name, info.ServerVersion)
	case info.Version > latest:
		c.r.fail(&config.Error{Key: s.Key(), Value: s.Where(),
			Err: fmt.Errorf("schema version %d is newer than this xapsproxy supports (%d)", info.Version, latest),
			Fix: "a newer xapsproxy wrote it: run that version (or newer), or restore a dump made for this one"})
	case info.Version < latest:
		c.r.ok("%s: PostgreSQL %s; schema version %d (serve migrates it to %d when it starts)", name, info.ServerVersion, info.Version, latest)
	default:
		c.store = info.Info
		c.r.ok("%s: PostgreSQL %s; schema version %d; %s, %s", name, info.ServerVersion, info.Version,
			plural(len(info.Users), "account"), plural(info.Devices, "device"))
	}
}
