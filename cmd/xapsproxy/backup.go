package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/xapsproxy/xapsproxy/config"
	"github.com/xapsproxy/xapsproxy/store"
)

// backupCmd writes a consistent copy of the store to a new file, while
// serve runs or not.
func backupCmd(ctx context.Context, args []string, stdout io.Writer) error {
	cmd := newConfigCommand("backup")
	cfg, err := cmd.load(args)
	if err != nil {
		return err
	}
	rest := cmd.fs.Args()
	if len(rest) != 1 {
		return fmt.Errorf("backup: give the file to write the copy to (it must not exist): %w", errUsage)
	}
	if cfg.Store.IsPostgres() {
		return errors.New(cfg.Store.Key() + ": backup copies a SQLite file; for PostgreSQL use pg_dump")
	}
	st, err := store.Open(ctx, cfg.Store.Path)
	if err != nil {
		return storeError(cfg.Store, err)
	}
	defer st.Close()
	if err := st.Backup(ctx, rest[0]); err != nil {
		return fmt.Errorf("backup of %s to %s: %w", cfg.Store.Path, rest[0], err)
	}
	fmt.Fprintf(stdout, "backed up %s to %s\n", cfg.Store.Path, rest[0])
	if cfg.Watch.Auth == config.AuthCaptured {
		// The copy holds the sealed passwords; the key opens them.
		fmt.Fprintf(stdout, "the key of the captured passwords is not in the copy: keep %s apart from it, and as safe as the passwords themselves\n", cfg.Watch.SecretKeyFile)
	}
	return nil
}
