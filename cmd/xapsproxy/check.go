package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/xapsproxy/xapsproxy/config"
	"github.com/xapsproxy/xapsproxy/push"
	"github.com/xapsproxy/xapsproxy/watch"
)

// expiryWarning is how early check warns about an expiring certificate.
const expiryWarning = 30 * 24 * time.Hour

// checkCmd validates the configuration and reaches every outside party it
// can without side effects: it prints what it found and fails on the first
// problem.
func checkCmd(ctx context.Context, args []string, stdout io.Writer) error {
	cmd := newConfigCommand("check")
	fs := cmd.fs
	user := fs.String("user", "", "also log in to the backend as this user through the master user")
	cfg, err := cmd.load(args)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "config %s: ok\n", *cmd.path)

	creds, err := push.LoadCredentials(cfg.APNS, time.Now())
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, creds.Describe())
	if !creds.NotAfter.IsZero() && time.Until(creds.NotAfter) < expiryWarning {
		fmt.Fprintf(stdout, "WARNING: the APNs certificate expires in %s; renew it before then\n", time.Until(creds.NotAfter).Round(time.Hour))
	}
	fmt.Fprintf(stdout, "APNs endpoint: %s\n", cfg.APNS.EndpointURL())

	backendTLS, err := cfg.Backend.TLSConfig()
	if err != nil {
		return err
	}
	if cfg.Watch.Auth == config.AuthCaptured && *user != "" {
		// Watchers log in with the password of each user's last login
		// through the proxy, which check does not have.
		fmt.Fprintln(stdout, `-user ignored: with auth = "captured" watchers log in with each user's own password, stored at their next login through the proxy`)
		*user = ""
	}
	m := watch.New(watch.Options{Backend: cfg.Backend, BackendTLS: backendTLS, Watch: cfg.Watch})
	caps, err := m.Probe(ctx, *user)
	if err != nil {
		return fmt.Errorf("backend %s: %w", cfg.Backend.Address, err)
	}
	fmt.Fprintf(stdout, "backend %s (tls %s): reachable\n", cfg.Backend.Address, cfg.Backend.TLS)
	source, why := watchSource(cfg)
	if *user != "" {
		fmt.Fprintf(stdout, "master login as %s%s%s: ok\n", *user, cfg.Watch.MasterSeparator, cfg.Watch.MasterUser)
		notify := slices.Contains(caps, "NOTIFY")
		switch {
		case (source == watch.SourceAuto || source == watch.SourceNotify) && notify:
			source, why = watch.SourceNotify, why+"; the backend offers NOTIFY after login"
		case source == watch.SourceAuto || source == watch.SourceNotify:
			source, why = watch.SourceIdle, why+"; the backend does not offer NOTIFY after login"
		}
		if source == watch.SourceIdle && !slices.Contains(caps, "IDLE") {
			return fmt.Errorf("the backend offers neither NOTIFY nor IDLE after login (capabilities: %s)", strings.Join(caps, " "))
		}
	} else if cfg.Watch.Auth == config.AuthMaster {
		fmt.Fprintln(stdout, "master login not tried: pass -user NAME to test it")
	}
	fmt.Fprintf(stdout, "event source: %s (%s)\n", source, why)
	return nil
}
