package main

// How a PostgreSQL store's failures are worded: one line naming
// store.postgres (or store.postgres_file), the cause and the fix, found
// with errors.As on pgconn's error types and on the network and TLS errors
// under them. The URL is shown with its password redacted, and the
// password is taken out of every message, whoever wrote it.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"syscall"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/xapsproxy/xapsproxy/config"
)

// PostgreSQL's SQLSTATE codes that have a fix of their own (appendix A of
// its manual).
const (
	sqlstateInvalidPassword     = "28P01"
	sqlstateInvalidAuthSpec     = "28000" // pg_hba.conf has no line for this connection
	sqlstateInvalidCatalogName  = "3D000" // no such database
	sqlstateInsufficientPrivs   = "42501"
	sqlstateTooManyConnections  = "53300"
	sqlstateCannotConnectNow    = "57P03" // starting up, shutting down, in recovery
	sqlstateInvalidSchemaName   = "3F000"
	sqlstateReadOnlyTransaction = "25006" // a standby
)

// postgresError words a failure to open or use the PostgreSQL store s.
func postgresError(s config.Store, err error) error {
	u, _ := url.Parse(s.Postgres) // config validated it
	if u == nil {
		u = &url.URL{}
	}
	user, db := u.User.Username(), strings.TrimPrefix(u.Path, "/")
	if user == "" {
		user = "USER"
	}
	if db == "" {
		db = user
	}
	e := &config.Error{Key: s.Key(), Value: s.Where(), Err: err}
	if s.PostgresFile != "" {
		e.Value = s.PostgresFile + " (" + s.Where() + ")"
	}
	where := "the server in the URL"
	var ce *pgconn.ConnectError
	if errors.As(err, &ce) && ce.Config != nil {
		where = net.JoinHostPort(ce.Config.Host, fmt.Sprint(ce.Config.Port))
		if strings.HasPrefix(ce.Config.Host, "/") {
			where = fmt.Sprintf("the socket in %s (port %d)", ce.Config.Host, ce.Config.Port)
		}
	}
	var pgErr *pgconn.PgError
	var dnsErr *net.DNSError
	var certErr *tls.CertificateVerificationError
	var hostErr x509.HostnameError
	var authorityErr x509.UnknownAuthorityError
	worded := true // e.Err is set to words of its own below
	switch {
	case errors.As(err, &pgErr):
		e.Err = pgErr // "FATAL: password authentication failed for user "x" (SQLSTATE 28P01)"
		e.Fix = pgFix(pgErr.Code, user, db)
	case errors.Is(err, syscall.ECONNREFUSED):
		e.Err = fmt.Errorf("connection to %s refused", where)
		e.Fix = "is PostgreSQL running, and listening there (listen_addresses and port in postgresql.conf)? Or fix the host and port in the URL"
	case errors.Is(err, syscall.ENOENT) && strings.HasPrefix(where, "the socket"):
		e.Err = fmt.Errorf("no PostgreSQL at %s", where)
		e.Fix = "is PostgreSQL running? Debian's listens in /run/postgresql (host=/run/postgresql in the URL)"
	case errors.As(err, &dnsErr):
		e.Err = dnsErr
		e.Fix = "fix the host name in the URL, or use an IP address"
	case errors.As(err, &hostErr), errors.As(err, &authorityErr), errors.As(err, &certErr):
		worded = false
		e.Fix = "the server's TLS certificate is not trusted for this host: name its CA with sslrootcert=FILE in the URL, " +
			"and connect to a host name the certificate covers (sslmode=verify-full checks both)"
	case errors.Is(err, context.DeadlineExceeded) || pgconn.Timeout(err):
		worded = false
		e.Fix = fmt.Sprintf("no answer from %s in time: is a firewall dropping the connection, or the host wrong?", where)
	case ce != nil:
		worded = false
		e.Fix = "check the host, port and sslmode in the URL (a server without TLS refuses sslmode=require and above)"
	default:
		worded = false
		e.Fix = "check " + s.Key() + ", and PostgreSQL's log"
	}
	if ce != nil && !worded {
		e.Err = ce // what was tried and why it failed, without the wrappers' repetition of the URL
	}
	return &redacted{e, passwords(s.Postgres, u)}
}

// pgFix is the fix for a PostgreSQL error code.
func pgFix(code, user, db string) string {
	switch code {
	case sqlstateInvalidPassword:
		return fmt.Sprintf("the password in the URL is not %s's: set it there (percent-encoded), or set the role's with ALTER ROLE %s PASSWORD '...'", user, user)
	case sqlstateInvalidAuthSpec:
		return "pg_hba.conf lets no such connection in (this host, user, database and TLS or not): add a line for it " +
			fmt.Sprintf("(e.g. hostssl %s %s ADDRESS/32 scram-sha-256) and reload PostgreSQL; a line for hostssl only needs sslmode=require or above", db, user)
	case sqlstateInvalidCatalogName:
		return fmt.Sprintf("create it: createdb -O %s %s (as the postgres user), or fix the database name in the URL", user, db)
	case sqlstateInsufficientPrivs, sqlstateInvalidSchemaName:
		return fmt.Sprintf("the role needs to own the database or be granted CREATE and USAGE on it and its schema: "+
			"ALTER DATABASE %s OWNER TO %s, or GRANT ALL ON SCHEMA public TO %s (PostgreSQL 15 grants others no CREATE on public)", db, user, user)
	case sqlstateTooManyConnections:
		return "PostgreSQL has no connection left: raise max_connections, or run fewer clients on it"
	case sqlstateCannotConnectNow:
		return "PostgreSQL is starting up or shutting down: start xapsproxy once it accepts connections"
	case sqlstateReadOnlyTransaction:
		return "the URL names a read-only server (a standby): point it at the primary"
	}
	return "see PostgreSQL's log for this error"
}

// passwords returns the password in a database URL as it is and as it is
// written there (percent-encoded, in the user part or a password=
// parameter); none if it has none.
func passwords(raw string, u *url.URL) []string {
	var pws []string
	if pw, ok := u.User.Password(); ok && pw != "" {
		pws = append(pws, pw)
	}
	if pw := u.Query().Get("password"); pw != "" {
		pws = append(pws, pw, url.QueryEscape(pw))
	}
	// The user part as written: between :// and the last @ before the
	// first / ? or # (config checked that the URL parses, so none of
	// those is in the password unencoded).
	if _, rest, ok := strings.Cut(raw, "://"); ok {
		if i := strings.IndexAny(rest, "/?#"); i >= 0 {
			rest = rest[:i]
		}
		if at := strings.LastIndex(rest, "@"); at >= 0 {
			if _, pw, ok := strings.Cut(rest[:at], ":"); ok && pw != "" {
				pws = append(pws, pw)
			}
		}
	}
	return pws
}

// redacted is an error whose message never shows a password: whatever a
// driver or a wrapper put in it, each of pws is replaced by xxxxx.
type redacted struct {
	err error
	pws []string
}

func (r *redacted) Error() string {
	msg := r.err.Error()
	for _, pw := range r.pws {
		msg = strings.ReplaceAll(msg, pw, "xxxxx")
	}
	return msg
}

func (r *redacted) Unwrap() error { return r.err }
