package main

// The backend checks: the connection, the master login (and, when it
// fails, whose fault it is) and the event source each account would use.
//
// Dovecot 2.3 answers a master login "USER*MASTER" with a wrong master
// password, or with a separator it does not use, NO [AUTHENTICATIONFAILED];
// with the right master password for a user it does not know, NO
// [AUTHORIZATIONFAILED]. When another tried user logged in with the same
// master credentials, those are right whatever the code says.

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/xapsproxy/xapsproxy/config"
	"github.com/xapsproxy/xapsproxy/internal/imapnotify"
	"github.com/xapsproxy/xapsproxy/watch"
)

// maxCheckLogins is how many registered users check logs in as, without
// -user.
const maxCheckLogins = 3

// loginResult is one master login check tried.
type loginResult struct {
	user, login string
	caps        []string // after login
	err         error
	crossCheck  bool // tried only to tell whose fault another's refusal is
}

// isRefusal reports whether err is the backend's refusal of a login for
// good.
func isRefusal(err error) bool {
	var re *imapnotify.ResponseError
	return errors.As(err, &re) && re.Status == "NO" && !re.Temporary()
}

// checkBackend connects to the backend as a watcher would, then logs in
// through the master user.
func (c *checker) checkBackend(ctx context.Context) {
	b := c.cfg.Backend
	backendTLS, err := b.TLSConfig()
	if err != nil {
		c.r.fail(err)
		return
	}
	m := watch.New(watch.Options{Backend: b, BackendTLS: backendTLS, Watch: c.cfg.Watch})
	caps, err := m.Probe(ctx, "")
	if err != nil {
		c.r.fail(&config.Error{Key: "backend.address", Value: strconv.Quote(b.Address), Err: err, Fix: backendFix(err, b)})
		return
	}
	c.r.ok("backend %s (tls %s): reachable; capabilities before login: %s", b.Address, b.TLS, strings.Join(caps, " "))
	if slices.Contains(caps, "LOGINDISABLED") {
		c.r.fail(&config.Error{Key: "backend.tls", Value: strconv.Quote(b.TLS), Err: errors.New("the backend refuses LOGIN on this connection (LOGINDISABLED)"),
			Fix: `set backend.tls = "starttls" (or "implicit" for its TLS port), or let Dovecot take plain text logins from the proxy's address (login_trusted_networks)`})
	}

	source, why := watchSource(c.cfg)
	if c.cfg.Watch.Auth == config.AuthCaptured {
		ignored := ""
		if c.user != "" {
			ignored = " (-user ignored)"
		}
		c.r.note(`watch.auth = "captured": watchers log in with each user's own password, captured at their next login through the proxy, so no master login is tried%s`, ignored)
		if source == watch.SourceEvents {
			c.r.ok("event source for %s: dovecot events (%s)", c.accounts(), why)
		} else {
			c.r.note("event source: decided per account after its login (%s)", why)
		}
		return
	}
	users := c.loginUsers()
	if len(users) == 0 {
		c.r.note("master login not tried: the store has no registered accounts; pass -user NAME to test it")
		if source == watch.SourceEvents {
			c.r.ok("event source for every account: dovecot events (%s); the catch-up after a restart logs in with the master user", why)
		} else {
			c.r.note("event source: decided per account after its master login (%s)", why)
		}
		return
	}
	if c.user == "" {
		c.r.note("master login tried for %s (%d of %s in the store)", strings.Join(users, ", "), len(users), plural(len(c.store.Users), "account"))
	}
	creds := watch.MasterCredentials{User: c.cfg.Watch.MasterUser, Separator: c.cfg.Watch.MasterSeparator}
	var results []loginResult
	for _, u := range users {
		login, _, _ := creds.For(ctx, u)
		caps, err := m.Probe(ctx, u)
		results = append(results, loginResult{user: u, login: login, caps: caps, err: err})
	}
	var re *imapnotify.ResponseError
	if res := results[0]; c.user != "" && isRefusal(res.err) && errors.As(res.err, &re) && re.Code != "AUTHORIZATIONFAILED" {
		// A registered user the same master credentials log in as would
		// prove them right, and the refusal U's own.
		for _, u := range c.store.Users {
			if u != res.user {
				login, _, _ := creds.For(ctx, u)
				caps, err := m.Probe(ctx, u)
				results = append(results, loginResult{user: u, login: login, caps: caps, err: err, crossCheck: true})
				break
			}
		}
	}
	c.reportLogins(results)
	c.reportEventSource(source, why, results)
}

// loginUsers are the users check logs in as: -user, or up to
// maxCheckLogins registered ones.
func (c *checker) loginUsers() []string {
	if c.user != "" {
		u := c.cfg.Backend.CanonicalUser(c.user)
		if u != c.user {
			c.r.note("-user %s is %s as the backend names it (backend.username_format = %q)", c.user, u, c.cfg.Backend.UsernameFormat)
		}
		return []string{u}
	}
	return c.store.Users[:min(len(c.store.Users), maxCheckLogins)]
}

// accounts names the accounts a finding is about.
func (c *checker) accounts() string {
	switch {
	case len(c.store.Users) > 0:
		return "all " + plural(len(c.store.Users), "account")
	case c.user != "":
		return c.cfg.Backend.CanonicalUser(c.user)
	}
	return "every account"
}

// reportLogins reports each master login, and for those refused, whose
// fault it is.
func (c *checker) reportLogins(results []loginResult) {
	w := c.cfg.Watch
	var worked string // a user the master credentials logged in as
	var refused []loginResult
	for _, res := range results {
		var re *imapnotify.ResponseError
		switch {
		case res.err == nil:
			worked = cmp.Or(worked, res.user)
			if res.crossCheck {
				c.r.ok("master login as %s: ok (%s is registered in the store; tried to compare)", res.login, res.user)
			} else {
				c.r.ok("master login as %s: ok", res.login)
			}
		case isRefusal(res.err):
			refused = append(refused, res)
		case errors.As(res.err, &re):
			c.r.fail(fmt.Errorf("master login as %s: %w — the backend failed, not the credentials: see Dovecot's log (doveadm log errors)", res.login, re))
		default:
			c.r.fail(&config.Error{Key: "backend.address", Value: strconv.Quote(c.cfg.Backend.Address),
				Err: fmt.Errorf("master login as %s: %w", res.login, res.err), Fix: backendFix(res.err, c.cfg.Backend)})
		}
	}
	password := "watch.master_password"
	if w.MasterPasswordFile != "" {
		password = fmt.Sprintf("watch.master_password_file (%s)", w.MasterPasswordFile)
	}
	var wrongMaster []loginResult
	for _, res := range refused {
		var re *imapnotify.ResponseError
		errors.As(res.err, &re)
		test := fmt.Sprintf("doveadm user '%s'; doveadm auth test '%s'", res.user, res.login)
		switch {
		case re.Code == "AUTHORIZATIONFAILED":
			c.r.fail(fmt.Errorf("master login as %s: %s %s: the master user and password were accepted, but the backend knows no user %q — check the name "+
				"(the store holds it as the backend names users after backend.username_format = %q) and that the user exists in Dovecot; test with: %s",
				res.login, re.Status, responseText(re), res.user, c.cfg.Backend.UsernameFormat, test))
		case worked != "":
			c.r.fail(fmt.Errorf("master login as %s: %s %s: the same master user and password log in as %s, so they are right: the backend refuses user %q "+
				"(unknown, disabled, or not allowed to be logged in to by the master user) — check the user in Dovecot; test with: %s",
				res.login, re.Status, responseText(re), worked, res.user, test))
		default:
			wrongMaster = append(wrongMaster, res)
		}
	}
	if len(wrongMaster) == 0 {
		return
	}
	var tried []string
	for _, res := range wrongMaster {
		tried = append(tried, res.user)
	}
	res := wrongMaster[0]
	var re *imapnotify.ResponseError
	errors.As(res.err, &re)
	c.r.fail(fmt.Errorf("master login as %s: %s %s: the backend refused the master user's credentials for every user tried (%s) — "+
		"check watch.master_user (%q), %s and watch.master_separator (%q) against Dovecot's master passdb and its auth_master_user_separator; test with: doveadm auth test '%s'",
		res.login, re.Status, responseText(re), strings.Join(tried, ", "), w.MasterUser, password, w.MasterSeparator, res.login))
}

// responseText is a refusal as the backend worded it: "[CODE] text".
func responseText(re *imapnotify.ResponseError) string {
	if re.Code == "" {
		return re.Text
	}
	return "[" + re.Code + "] " + re.Text
}

// reportEventSource says which event source each account logged in as
// would use: one line when they agree.
func (c *checker) reportEventSource(source, why string, results []loginResult) {
	if source == watch.SourceEvents {
		c.r.ok("event source for %s: dovecot events (%s); the catch-up after a restart logs in with the master user", c.accounts(), why)
		return
	}
	type found struct{ source, why string }
	var users []string
	byUser := map[string]found{}
	for _, res := range results {
		if res.err != nil || res.crossCheck {
			continue
		}
		f := found{source: watch.SourceIdle, why: why + "; the backend does not offer NOTIFY after login"}
		if source == watch.SourceIdle {
			f.why = why
		} else if slices.Contains(res.caps, "NOTIFY") {
			f = found{source: watch.SourceNotify, why: why + "; the backend offers NOTIFY after login"}
		}
		if f.source == watch.SourceIdle && !slices.Contains(res.caps, "IDLE") {
			c.r.fail(fmt.Errorf("event source for %s: the backend offers neither NOTIFY nor IDLE after login (capabilities: %s) — xapsproxy cannot watch this server", res.user, strings.Join(res.caps, " ")))
			continue
		}
		users = append(users, res.user)
		byUser[res.user] = f
	}
	if len(users) == 0 {
		return
	}
	same := true
	for _, u := range users {
		same = same && byUser[u] == byUser[users[0]]
	}
	if !same {
		for _, u := range users {
			c.r.ok("event source for %s: %s (%s)", u, byUser[u].source, byUser[u].why)
		}
		return
	}
	f := byUser[users[0]]
	who := c.accounts()
	if c.user != "" {
		who = users[0]
	}
	c.r.ok("event source for %s: %s (%s)", who, f.source, f.why)
}

// backendFix says what to do when the backend cannot be reached.
func backendFix(err error, b config.Backend) string {
	var unknown x509.UnknownAuthorityError
	var hostname x509.HostnameError
	var verify *tls.CertificateVerificationError
	switch {
	case errors.As(err, &unknown) || errors.As(err, &hostname) || errors.As(err, &verify):
		return "Dovecot's certificate is not trusted: set backend.ca_file to the CA that signed it, and backend.server_name to a name in it"
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Sprintf("nothing listens at %s: is Dovecot running? Check backend.address (the port Dovecot's imap listener uses)", b.Address)
	}
	return `check backend.address, and backend.tls: "implicit" for Dovecot's TLS port (993), "none" or "starttls" for a plain one (143)`
}
