package watch

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"slices"

	"github.com/xapsproxy/xapsproxy/config"
	"github.com/xapsproxy/xapsproxy/internal/imapnotify"
	"github.com/xapsproxy/xapsproxy/internal/imapwire"
)

// errGreetingTimeout is the cause of a connection given up because the
// backend accepted it but sent no greeting within the greeting timeout.
var errGreetingTimeout = errors.New("no greeting within the greeting timeout")

// refusedError marks a login the backend refused for good (a wrong master
// password, an unknown user): trying again soon would fail the same way,
// so the watcher retries only after its longest backoff.
type refusedError struct{ err error }

func (e *refusedError) Error() string { return e.err.Error() }
func (e *refusedError) Unwrap() error { return e.err }

func isRefused(err error) bool {
	var r *refusedError
	return errors.As(err, &r)
}

// clientOptions are the options of a backend connection for user ("" for
// none) other than a NOTIFY session's: every response waited for at most
// commandTimeout.
func (m *Manager) clientOptions(user string) imapnotify.Options {
	log := m.log
	if user != "" {
		log = log.With("user", user)
	}
	return imapnotify.Options{User: user, Logger: log, CommandTimeout: commandTimeout}
}

// dial connects to the backend with the configured TLS and reads the
// greeting. Its errors are unreachableErrors, unless ctx ended.
//
// The TCP connect is bounded by connectTimeout; TLS and the greeting
// together by the greeting timeout, which is much shorter: a backend that
// accepted the connection and does not greet within it is overloaded, or
// lost the connection in its listen queue, and waiting longer only delays
// the retry.
func (m *Manager) dial(ctx context.Context, opts imapnotify.Options) (*imapnotify.Client, error) {
	b := m.opts.Backend
	tc := m.opts.BackendTLS
	if tc == nil {
		tc = b.BaseTLSConfig()
	}
	cctx, cancel := context.WithTimeout(ctx, connectTimeout)
	var d net.Dialer
	conn, err := d.DialContext(cctx, "tcp", b.Address)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, unreachable(fmt.Errorf("dial backend: %w", err))
	}
	gctx, cancel := context.WithTimeoutCause(ctx, m.opts.GreetingTimeout, errGreetingTimeout)
	defer cancel()
	c, err := greet(gctx, conn, b.TLS, tc, opts)
	switch {
	case err == nil:
		return c, nil
	case ctx.Err() != nil:
		return nil, ctx.Err()
	case errors.Is(context.Cause(gctx), errGreetingTimeout):
		m.stats.greetingTimeouts.Add(1)
		return nil, unreachable(fmt.Errorf("backend greeting: %w (%v)", errGreetingTimeout, m.opts.GreetingTimeout))
	}
	return nil, unreachable(err)
}

// greet sets up TLS as configured and reads the greeting, closing conn on
// failure.
func greet(ctx context.Context, conn net.Conn, mode string, tc *tls.Config, opts imapnotify.Options) (*imapnotify.Client, error) {
	if mode == config.BackendTLSImplicit {
		tlsConn := tls.Client(conn, tc)
		if err := tlsConn.HandshakeContext(ctx); err != nil {
			conn.Close()
			return nil, fmt.Errorf("backend TLS: %w", err)
		}
		conn = tlsConn
	}
	c := imapnotify.New(conn, opts)
	if err := c.Greeting(ctx); err != nil {
		c.Close()
		return nil, fmt.Errorf("backend greeting: %w", err)
	}
	if mode == config.BackendTLSStartTLS {
		if err := c.StartTLS(ctx, tc); err != nil {
			c.Close()
			return nil, fmt.Errorf("backend STARTTLS: %w", err)
		}
	}
	return c, nil
}

// login logs in as user with what the Credentials give for them. A NO
// that is not temporary is a refusedError, and the Credentials are told.
func (m *Manager) login(ctx context.Context, c *imapnotify.Client, user string) error {
	login, password, err := m.creds.For(ctx, user)
	if err != nil {
		return err
	}
	err = c.Login(ctx, login, password)
	if err == nil {
		return nil
	}
	err = fmt.Errorf("log in as %s: %w", login, err)
	var re *imapnotify.ResponseError
	if errors.As(err, &re) && re.Status == "NO" && !re.Temporary() {
		m.stats.loginsRefused.Add(1)
		m.creds.Refused(ctx, user, login, password)
		return &refusedError{err}
	}
	if ctx.Err() == nil {
		m.stats.loginsFailed.Add(1)
	}
	return err
}

// login dials the backend with opts and logs in as the watcher's user.
// Failures before the login are unreachableErrors (see dial); a refused
// login is a refusedError.
func (w *watcher) login(ctx context.Context, opts imapnotify.Options) (*imapnotify.Client, error) {
	m := w.m
	c, err := m.dial(ctx, opts)
	if err != nil {
		return nil, err
	}
	if err := m.login(ctx, c, w.user); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// backendName is the name to give the backend for a registered (wire)
// mailbox name: its modified UTF-7 spelling, as the backend reads names
// from a client that has not enabled UTF8=ACCEPT. It is false for a name
// that is not valid modified UTF-7 (nor UTF-8).
func backendName(mb string) (string, bool) {
	name, err := imapwire.DecodeMailbox(mb)
	if err != nil {
		return "", false
	}
	return imapwire.EncodeMailbox(name), true
}

// skippable returns nil for a refusal by the server (NO/BAD), which concerns
// one mailbox, and err for anything else, which ends the session.
func skippable(err error) error {
	var re *imapnotify.ResponseError
	if err == nil || errors.As(err, &re) {
		return nil
	}
	return err
}

// Probe connects to the backend as a watcher would and returns its
// capabilities; with a user, it also logs in as that user through the master
// user. It is for `xapsproxy check`.
func (m *Manager) Probe(ctx context.Context, user string) ([]string, error) {
	c, err := m.dial(ctx, m.clientOptions(user))
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if user != "" {
		if err := m.login(ctx, c, user); err != nil {
			return nil, err
		}
	}
	caps, err := c.Capabilities(ctx)
	if err != nil {
		return nil, fmt.Errorf("capability: %w", err)
	}
	slices.Sort(caps)
	c.Logout(ctx)
	return caps, nil
}
