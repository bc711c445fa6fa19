package main

// xapsproxy check: a preflight. It finds what serve would fail on (the
// configuration, the store, the certificates, the listen addresses, the
// APNs credentials), then reaches the outside parties (APNs, the backend,
// its master user) and reads Dovecot's limits, all without side effects:
// it takes no lock, migrates nothing, binds nothing for longer than a
// moment and sends no push. Every finding is one line that starts with
// its kind, so that all problems show in one run:
//
//	ok    what was checked: what was found
//	note  something to know, not a problem
//	warn  something to fix before it bites (exit status 0)
//	FAIL  key value: what is wrong — what to do (exit status 1)
//
// and a summary line ends the report.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/xapsproxy/xapsproxy/config"
	"github.com/xapsproxy/xapsproxy/store"
)

// expiryWarning is how early check warns about an expiring certificate.
const expiryWarning = 30 * 24 * time.Hour

// checkCmd runs the preflight and returns an error if it found a problem.
func checkCmd(ctx context.Context, args []string, stdout io.Writer) error {
	cmd := newConfigCommand("check")
	fs := cmd.fs
	user := fs.String("user", "", "also log in to the backend as this user through the master user (default: up to 3 users registered in the store)")
	dovecotConfig := fs.String("dovecot-config", "", "Dovecot's configuration file, read with doveconf -c FILE for its limits (default: doveconf's own, when it can read it)")
	if err := cmd.parse(args); err != nil {
		return err
	}
	r := &checkReport{w: stdout}
	cfg, err := loadConfig(*cmd.path)
	if err != nil {
		r.fail(err)
		return r.summary()
	}
	r.ok("config %s", *cmd.path)
	c := &checker{cfg: cfg, r: r, user: *user, dovecotConfig: *dovecotConfig, now: time.Now()}
	c.checkStore(ctx)
	c.checkSecretKey()
	c.checkProxyCertificate()
	c.checkListeners()
	c.checkAPNs(ctx)
	c.checkBackend(ctx)
	c.checkDovecotLimits(ctx)
	return r.summary()
}

// checker is one run of check: the configuration and what the checks
// found that later ones use.
type checker struct {
	cfg           *config.Config
	r             *checkReport
	user          string // -user
	dovecotConfig string // -dovecot-config
	now           time.Time

	store    store.Info // the accounts registered; zero when unreadable
	servePID int        // the serve holding the store's lock, -1 if unknown
	serving  bool       // a serve holds the store's lock
}

// checkReport writes the findings, one line each, and counts them.
type checkReport struct {
	w               io.Writer
	problems, warns int
}

func (r *checkReport) line(kind, format string, args ...any) {
	fmt.Fprintf(r.w, "%-5s %s\n", kind, oneLine(fmt.Sprintf(format, args...)))
}

// ok reports something checked and found right.
func (r *checkReport) ok(format string, args ...any) { r.line("ok", format, args...) }

// note reports something worth knowing that is not a problem.
func (r *checkReport) note(format string, args ...any) { r.line("note", format, args...) }

// warn reports something that works now but should be fixed.
func (r *checkReport) warn(format string, args ...any) {
	r.warns++
	r.line("warn", format, args...)
}

// fail reports a problem: err says what and, as a config.Error, the key
// and the fix.
func (r *checkReport) fail(err error) {
	r.problems++
	r.line("FAIL", "%s", err.Error())
}

// errCheckFailed is check's error when it found problems: the report
// has said what they are.
var errCheckFailed = errors.New("check found problems")

// summary ends the report with the counts, and fails if there were
// problems.
func (r *checkReport) summary() error {
	fmt.Fprintf(r.w, "%s, %s\n", plural(r.problems, "problem"), plural(r.warns, "warning"))
	if r.problems > 0 {
		return fmt.Errorf("%w: %s (see the FAIL lines above)", errCheckFailed, plural(r.problems, "problem"))
	}
	return nil
}

// plural is "1 problem", "2 problems".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// days words a duration to an expiry: "in 12 days", "in 5 hours".
func days(d time.Duration) string {
	if d < 48*time.Hour {
		return fmt.Sprintf("in %d hours", int(d.Hours()))
	}
	return fmt.Sprintf("in %d days", int(d.Hours()/24))
}
