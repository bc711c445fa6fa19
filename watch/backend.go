package watch

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/xapsproxy/xapsproxy/config"
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

// temporaryLoginCodes are the response codes of a NO to LOGIN that say the
// failure is the server's and may pass (RFC 5530).
var temporaryLoginCodes = []imap.ResponseCode{
	imap.ResponseCodeUnavailable, imap.ResponseCodeServerBug, imap.ResponseCodeLimit, imap.ResponseCodeInUse,
}

// timed runs commands on c, closing c if they take longer than
// commandTimeout (imapclient commands take no context).
func timed(c *imapclient.Client, f func() error) error {
	t := time.AfterFunc(commandTimeout, func() { c.Close() })
	defer t.Stop()
	return f()
}

// login logs in as user with what the Credentials give for them. A NO
// that is not temporary is a refusedError, and the Credentials are told.
func (m *Manager) login(ctx context.Context, c *imapclient.Client, user string) error {
	login, password, err := m.creds.For(ctx, user)
	if err != nil {
		return err
	}
	err = timed(c, func() error { return c.Login(login, password).Wait() })
	if err == nil {
		return nil
	}
	err = fmt.Errorf("log in as %s: %w", login, err)
	var imapErr *imap.Error
	if errors.As(err, &imapErr) && imapErr.Type == imap.StatusResponseTypeNo && !slices.Contains(temporaryLoginCodes, imapErr.Code) {
		m.creds.Refused(ctx, user, login, password)
		return &refusedError{err}
	}
	return err
}

// signals are what a connection in IDLE hears from the backend outside a
// command: exists on an EXISTS (new mail, or a count change), changed on
// an EXPUNGE or on a FETCH of a message that was there at the last look
// (flags changed; Dovecot also sends the flags of new messages). Both are
// 1-buffered and never block the connection's reader.
type signals struct {
	exists, changed chan struct{}
	// looked is the number of messages at the last look at the mailbox in
	// IDLE, less those expunged since.
	looked atomic.Uint32
}

func newSignals() *signals {
	return &signals{exists: make(chan struct{}, 1), changed: make(chan struct{}, 1)}
}

func raise(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// onlyRecent reports whether flags are \Recent alone: what Dovecot sends
// for a message when an IDLE connection comes back from hibernation, with
// no change behind it. (A change that leaves only \Recent, such as marking
// the one new message unread again, is missed; the next event brings it.)
func onlyRecent(flags []imap.Flag) bool {
	return len(flags) == 1 && strings.EqualFold(string(flags[0]), `\Recent`)
}

// dial connects to the backend with the configured TLS and reads the
// greeting. Data the backend sends outside a command is raised on sig
// (nil: ignored). Its errors are unreachableErrors, unless ctx ended.
//
// The TCP connect is bounded by connectTimeout; TLS and the greeting
// together by the greeting timeout, which is much shorter: a backend that
// accepted the connection and does not greet within it is overloaded, or
// lost the connection in its listen queue, and waiting longer only delays
// the retry.
func (m *Manager) dial(ctx context.Context, sig *signals) (*imapclient.Client, error) {
	b := m.opts.Backend
	tc := m.opts.BackendTLS
	if tc == nil {
		tc = b.BaseTLSConfig()
	}
	opts := &imapclient.Options{TLSConfig: tc}
	if sig != nil {
		opts.UnilateralDataHandler = &imapclient.UnilateralDataHandler{
			Mailbox: func(d *imapclient.UnilateralDataMailbox) {
				if d.NumMessages != nil {
					raise(sig.exists)
				}
			},
			Expunge: func(uint32) {
				if n := sig.looked.Load(); n > 0 {
					sig.looked.Store(n - 1)
				}
				raise(sig.changed)
			},
			// imapclient runs this in a goroutine of its own, and its
			// reader waits until the data is read.
			Fetch: func(msg *imapclient.FetchMessageData) {
				buf, err := msg.Collect()
				if err == nil && onlyRecent(buf.Flags) {
					return
				}
				if msg.SeqNum <= sig.looked.Load() {
					raise(sig.changed)
				}
			},
		}
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
	// Closing the connection is what interrupts imapclient, which takes no
	// context.
	gctx, cancel := context.WithTimeoutCause(ctx, m.opts.GreetingTimeout, errGreetingTimeout)
	defer cancel()
	stop := context.AfterFunc(gctx, func() { conn.Close() })
	c, err := greet(gctx, conn, b.TLS, tc, opts)
	if !stop() && err == nil {
		c.Close()
		err = errors.New("connection closed")
	}
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

// greet sets up TLS as configured on conn and waits for the greeting,
// closing conn on failure.
func greet(ctx context.Context, conn net.Conn, mode string, tc *tls.Config, opts *imapclient.Options) (*imapclient.Client, error) {
	var c *imapclient.Client
	var err error
	switch mode {
	case config.BackendTLSImplicit:
		tlsConn := tls.Client(conn, tc)
		if err := tlsConn.HandshakeContext(ctx); err != nil {
			conn.Close()
			return nil, fmt.Errorf("backend TLS: %w", err)
		}
		c = imapclient.New(tlsConn, opts)
	case config.BackendTLSStartTLS:
		if c, err = imapclient.NewStartTLS(conn, opts); err != nil {
			return nil, fmt.Errorf("backend STARTTLS: %w", err)
		}
	default:
		c = imapclient.New(conn, opts)
	}
	if err := c.WaitGreeting(); err != nil {
		c.Close()
		return nil, fmt.Errorf("backend greeting: %w", err)
	}
	return c, nil
}

// Probe connects to the backend as a watcher would and returns its
// capabilities; with a user, it also logs in as that user through the master
// user. It is for `xapsproxy check`.
func (m *Manager) Probe(ctx context.Context, user string) ([]string, error) {
	c, err := m.dial(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	if user != "" {
		if err := m.login(ctx, c, user); err != nil {
			return nil, err
		}
	}
	var caps imap.CapSet
	if err := timed(c, func() (err error) { caps, err = c.Capability().Wait(); return err }); err != nil {
		return nil, fmt.Errorf("capability: %w", err)
	}
	names := make([]string, 0, len(caps))
	for name := range caps {
		names = append(names, string(name))
	}
	slices.Sort(names)
	c.Logout().Wait()
	return names, nil
}
