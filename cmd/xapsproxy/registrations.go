package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/xapsproxy/xapsproxy/admin"
	"github.com/xapsproxy/xapsproxy/store"
)

// registrationsCmd lists or deletes stored registrations.
func registrationsCmd(ctx context.Context, args []string, stdout io.Writer) error {
	cmd := newConfigCommand("registrations")
	fs := cmd.fs
	cfg, err := cmd.load(args)
	if err != nil {
		return err
	}
	st, err := openStore(ctx, cfg)
	if err != nil {
		return err
	}
	defer st.Close()

	rest := fs.Args()
	if len(rest) == 0 {
		rest = []string{"list"}
	}
	switch {
	case rest[0] == "list" && len(rest) == 1:
		regs, err := st.All(ctx)
		if err != nil {
			return err
		}
		return printRegistrations(stdout, regs)
	case rest[0] == "delete" && len(rest) == 3:
		user := cfg.Backend.CanonicalUser(rest[1])
		found, err := st.Delete(ctx, user, rest[2])
		if err != nil {
			return err
		}
		if !found {
			return fmt.Errorf("no registration of user %q with token %s", user, rest[2])
		}
		fmt.Fprintf(stdout, "deleted the registration of %s with token %s\n", user, rest[2])
		tellOwners(ctx, st, user)
		return nil
	case rest[0] == "delete-token" && len(rest) == 2:
		users, err := st.DeleteToken(ctx, rest[1])
		if err != nil {
			return err
		}
		if len(users) == 0 {
			return fmt.Errorf("no registration with token %s", rest[1])
		}
		fmt.Fprintf(stdout, "deleted token %s of %s\n", rest[1], admin.Printable(strings.Join(users, ", ")))
		tellOwners(ctx, st, users...)
		return nil
	}
	return fmt.Errorf("registrations: list, delete USER TOKEN, or delete-token TOKEN: %w", errUsage)
}

func printRegistrations(w io.Writer, regs []store.Registration) error {
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "USER\tDEVICE TOKEN\tACCOUNT ID\tV\tMAILBOXES\tRENEWED\tLAST PUSH")
	for _, r := range regs {
		last := "-"
		if !r.LastPush.IsZero() {
			last = r.LastPush.UTC().Format(time.RFC3339) + " " + r.LastPushResult
		}
		// Clients chose the names: their control characters are escaped.
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\n", admin.Printable(r.User), r.DeviceToken, admin.Printable(r.AccountID), r.Version,
			admin.Printable(strings.Join(r.Mailboxes, ",")), r.Renewed.UTC().Format(time.RFC3339), admin.Printable(last))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "%d registrations\n", len(regs))
	return err
}
