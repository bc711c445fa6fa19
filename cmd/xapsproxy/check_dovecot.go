package main

// The Dovecot limits that matter for the number of registered accounts,
// read with doveconf where check runs (the Dovecot host, when it is this
// machine): Dovecot 2.3's doveconf -h prints one setting's value, and
// -f protocol=imap applies the protocol imap { } block.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/xapsproxy/xapsproxy/watch"
)

// doveconfTimeout bounds each doveconf run.
const doveconfTimeout = 10 * time.Second

// inotifyInstances is where Linux keeps the inotify instances a uid may
// have.
const inotifyInstances = "/proc/sys/fs/inotify/max_user_instances"

// dovecotLimits are the settings check reads.
type dovecotLimits struct {
	processLimit, clientLimit int    // service imap, defaults applied
	userIP                    int    // mail_max_userip_connections for imap; 0 = no limit
	hibernate                 string // imap_hibernate_timeout, "0" = off
	inotify                   int    // fs.inotify.max_user_instances; 0 = unknown
}

// checkDovecotLimits reads Dovecot's limits and compares them with what
// the registered accounts need.
func (c *checker) checkDovecotLimits(ctx context.Context) {
	what := "doveconf"
	if c.dovecotConfig != "" {
		what = "doveconf -c " + c.dovecotConfig
	}
	bin, err := exec.LookPath("doveconf")
	if err != nil {
		if c.dovecotConfig != "" {
			c.r.warn("-dovecot-config %s: Dovecot's limits not checked: doveconf is not in PATH — run check on the Dovecot host", c.dovecotConfig)
		} else {
			c.r.note("Dovecot's limits not checked: doveconf is not in PATH (run check on the Dovecot host to check them)")
		}
		return
	}
	l, err := c.readLimits(ctx, bin)
	if err != nil {
		if c.dovecotConfig != "" {
			c.r.warn("-dovecot-config %s: Dovecot's limits not checked: %v — name Dovecot's dovecot.conf, readable by the user check runs as", c.dovecotConfig, err)
		} else {
			c.r.note("Dovecot's limits not checked: doveconf cannot read Dovecot's configuration (%v); run check as a user who can, or pass -dovecot-config FILE", err)
		}
		return
	}
	inotify := "unknown"
	if l.inotify > 0 {
		inotify = strconv.Itoa(l.inotify)
	}
	c.r.ok("dovecot limits (%s): service imap process_limit %d, client_limit %d; mail_max_userip_connections %d; imap_hibernate_timeout %s; fs.inotify.max_user_instances %s",
		what, l.processLimit, l.clientLimit, l.userIP, l.hibernate, inotify)

	source, _ := watchSource(c.cfg)
	n, devices := len(c.store.Users), c.store.Devices
	if source == watch.SourceEvents {
		c.r.note("with dovecot events the watchers hold no connection per account, so these limits don't grow with the %s", plural(n, "account"))
		return
	}
	// Each account's watcher holds an imap session, and each device its
	// own (iPhone Mail idles on the inbox).
	need := n + devices
	if sessions := l.processLimit * l.clientLimit; sessions < need {
		c.r.warn("dovecot service imap process_limit %d (client_limit %d) allows %d imap sessions, fewer than the %s' watchers and the %s' own sessions need (%d) — raise it: service imap { process_limit = %d }",
			l.processLimit, l.clientLimit, sessions, plural(n, "account"), plural(devices, "device"), need, 2*need)
	}
	perUser, from := 1+c.store.MaxDevices, "its watcher and each of its devices' sessions all come from the proxy's address"
	if c.cfg.Backend.ForwardClientIP {
		perUser, from = 1, "its watcher comes from the proxy's address (backend.forward_client_ip = true: the devices' sessions count from their own, if Dovecot trusts the proxy: login_trusted_networks)"
	}
	if n > 0 && l.userIP > 0 && l.userIP < perUser {
		c.r.warn("dovecot mail_max_userip_connections %d is below what one account needs (%d: %s) — raise it: protocol imap { mail_max_userip_connections = %d }",
			l.userIP, perUser, from, perUser+5)
	}
	if l.inotify > 0 && l.inotify < need {
		c.r.warn("fs.inotify.max_user_instances %d is below the %d imap sessions of the %s and their devices: Dovecot's imap processes under one uid each take one, and one without it sees changes late — raise it: sysctl -w fs.inotify.max_user_instances=%d (and in /etc/sysctl.d/)",
			l.inotify, need, plural(n, "account"), 2*need)
	}
	if l.hibernate == "0" || l.hibernate == "" {
		c.r.note("dovecot imap_hibernate_timeout is unset: every idling watcher and device keeps an imap process; imap_hibernate_timeout = 30s hands idle sessions to imap-hibernate, which holds many in one process")
	}
}

// readLimits runs doveconf for each setting.
func (c *checker) readLimits(ctx context.Context, bin string) (dovecotLimits, error) {
	var l dovecotLimits
	get := func(filter, key string) (string, error) {
		var args []string
		if c.dovecotConfig != "" {
			args = append(args, "-c", c.dovecotConfig)
		}
		if filter != "" {
			args = append(args, "-f", filter)
		}
		args = append(args, "-h", key)
		dctx, cancel := context.WithTimeout(ctx, doveconfTimeout)
		defer cancel()
		out, err := exec.CommandContext(dctx, bin, args...).Output()
		if err != nil {
			var ee *exec.ExitError
			if errors.As(err, &ee) && len(strings.TrimSpace(string(ee.Stderr))) > 0 {
				return "", fmt.Errorf("doveconf %s: %s", strings.Join(args, " "), strings.TrimSpace(string(ee.Stderr)))
			}
			return "", fmt.Errorf("doveconf %s: %w", strings.Join(args, " "), err)
		}
		return strings.TrimSpace(string(out)), nil
	}
	getInt := func(key, fallback string) (int, error) {
		v, err := get("", key)
		if err != nil {
			return 0, err
		}
		if v == "0" && fallback != "" { // 0: the default_* setting applies
			v, err = get("", fallback)
			if err != nil {
				return 0, err
			}
		}
		n, err := strconv.Atoi(v)
		if err != nil {
			return 0, fmt.Errorf("doveconf %s: %q is not a number", key, v)
		}
		return n, nil
	}
	var err error
	if l.processLimit, err = getInt("service/imap/process_limit", "default_process_limit"); err != nil {
		return l, err
	}
	if l.clientLimit, err = getInt("service/imap/client_limit", "default_client_limit"); err != nil {
		return l, err
	}
	v, err := get("protocol=imap", "mail_max_userip_connections")
	if err != nil {
		return l, err
	}
	if l.userIP, err = strconv.Atoi(v); err != nil {
		return l, fmt.Errorf("doveconf mail_max_userip_connections: %q is not a number", v)
	}
	if l.hibernate, err = get("protocol=imap", "imap_hibernate_timeout"); err != nil {
		return l, err
	}
	if data, err := os.ReadFile(inotifyInstances); err == nil {
		l.inotify, _ = strconv.Atoi(strings.TrimSpace(string(data)))
	}
	return l, nil
}
