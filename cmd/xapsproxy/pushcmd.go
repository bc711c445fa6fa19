package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/xapsproxy/xapsproxy/admin"
	"github.com/xapsproxy/xapsproxy/push"
	"github.com/xapsproxy/xapsproxy/store"
)

// pushCmd sends one push to every device registered for a user, to check
// the APNs credentials end to end; what the pusher logs (a refused
// credential, say) goes to stderr as [log] says.
func pushCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cmd := newConfigCommand("push")
	user := cmd.fs.String("user", "", "user whose devices get the push")
	if err := cmd.parse(args); err != nil {
		return err
	}
	if *user == "" {
		return fmt.Errorf("push: -user is required: %w", errUsage)
	}
	cfg, err := loadConfig(*cmd.path)
	if err != nil {
		return err
	}
	creds, err := push.LoadCredentials(cfg.APNS, time.Now())
	if err != nil {
		return err
	}
	sender, err := push.NewAPNs(creds, cfg.APNS)
	if err != nil {
		return err
	}
	defer sender.Close()
	st, err := openStore(ctx, cfg)
	if err != nil {
		return err
	}
	defer st.Close()
	p := push.New(push.Options{Store: st, Sender: sender, Topic: creds.Topic, Logger: newConfigLogger(stderr, cfg.Log, false), OmitMailboxes: !cfg.APNS.MailboxHash, Priority: cfg.APNS.Priority,
		MaxConcurrent: cfg.APNS.Concurrency})
	results, err := p.PushUser(ctx, cfg.Backend.CanonicalUser(*user))
	if err != nil {
		return err
	}
	if len(results) == 0 {
		return fmt.Errorf("user %q has no registered devices", *user)
	}
	failed := 0
	for _, r := range results {
		fmt.Fprintf(stdout, "%s token %s… account %s: %s (%s)\n", admin.Printable(r.User), store.ShortToken(r.DeviceToken), admin.Printable(r.AccountID), r.Outcome(), r.Action)
		if r.Action != push.Delivered {
			failed++
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d pushes were not accepted", failed, len(results))
	}
	return nil
}
