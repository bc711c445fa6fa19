package imapnotify

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/xapsproxy/xapsproxy/event"
	"github.com/xapsproxy/xapsproxy/internal/imapwire"
)

// Defaults of Options.
const (
	DefaultCommandTimeout = 30 * time.Second
	DefaultKeepalive      = 25 * time.Minute
	DefaultMaxResponse    = 64 << 10
	// DefaultMaxIdle is the longest NextUpdate waits in one IDLE: servers
	// may end a connection idle for 30 minutes (RFC 9051 section 6.3.13).
	DefaultMaxIdle = 29 * time.Minute
)

// readBufferSize is a connection's read buffer while it reads: a STATUS or
// LIST fits many times over; longer responses are assembled in Client.buf.
const readBufferSize = 1 << 10

// keepBuffer is the largest response buffer kept between responses; a
// larger one (from an unusually long response) is dropped after use.
const keepBuffer = 4 << 10

var (
	// ErrOverflow means notifications were lost: call Notify again (its
	// statuses are the catch-up) or reconnect.
	ErrOverflow = errors.New("imapnotify: notifications lost; catch up")
	// ErrUnsupported means the server has no usable NOTIFY: it does not
	// offer it, or refuses new-mail or expunge events.
	ErrUnsupported = errors.New("imapnotify: the server does not support NOTIFY")
	// ErrBye is wrapped by the error of a connection the server ended with
	// an untagged BYE; the server's text follows it.
	ErrBye = errors.New("BYE from the server")
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("imapnotify: client closed")
	// ErrIdleExpired is returned by NextUpdate once an IDLE has lasted
	// the time Idle gave it: call Done, and Idle again.
	ErrIdleExpired = errors.New("imapnotify: IDLE ran for its time")
	// ErrInterrupted is returned by NextUpdate after Interrupt.
	ErrInterrupted = errors.New("imapnotify: wait interrupted")
)

// ResponseError is a NO or BAD answer to a command.
type ResponseError struct {
	Command string // the command's name: LOGIN, STATUS, NOTIFY...
	Status  string // NO or BAD
	Code    string // the response code's name in upper case, "" if none
	Text    string // the server's human-readable text
}

func (e *ResponseError) Error() string {
	var sb strings.Builder
	sb.WriteString("imapnotify: ")
	sb.WriteString(e.Command)
	sb.WriteString(": ")
	sb.WriteString(e.Status)
	if e.Code != "" {
		sb.WriteString(" [" + e.Code + "]")
	}
	if e.Text != "" {
		sb.WriteString(" " + e.Text)
	}
	return sb.String()
}

// temporaryCodes are the codes of a NO that says the failure is the
// server's and may pass (RFC 5530).
var temporaryCodes = []string{"UNAVAILABLE", "SERVERBUG", "LIMIT", "INUSE"}

// Temporary reports whether the NO may go away by itself, so that retrying
// soon makes sense; any other refusal (a wrong password, an unknown user)
// would only fail again.
func (e *ResponseError) Temporary() bool {
	return e.Status == "NO" && slices.Contains(temporaryCodes, e.Code)
}

// Is makes errors.Is(err, ErrOverflow) true for NO [NOTIFICATIONOVERFLOW].
func (e *ResponseError) Is(target error) bool {
	return target == ErrOverflow && e.Code == "NOTIFICATIONOVERFLOW"
}

// Options configures a Client. The zero value is usable.
type Options struct {
	// User is copied into every Hint.
	User string
	// Logger receives the client's few log lines (ignored responses at
	// debug, server warnings at warn); nil discards them. Passwords and
	// command lines are never logged.
	Logger *slog.Logger
	// CommandTimeout bounds each write, the wait for the greeting, and the
	// wait for each response while a command runs (so a server that keeps
	// answering is waited for). Zero means DefaultCommandTimeout.
	CommandTimeout time.Duration
	// Keepalive: Next sends a NOOP when nothing was sent for this long, and
	// fails when its answer does not come within CommandTimeout. Zero means
	// DefaultKeepalive; negative means never.
	Keepalive time.Duration
	// MaxResponse bounds one response held in memory, literals included.
	// A longer one is skipped; if it was one the client needs, that is a
	// protocol error. Zero means DefaultMaxResponse.
	MaxResponse int
	// MaxIdle bounds the time one IDLE lasts (see Idle). Zero means
	// DefaultMaxIdle.
	MaxIdle time.Duration
}

// Client is one connection to an IMAP server. See the package doc.
type Client struct {
	raw net.Conn      // deadlines and Close; the TCP connection under any TLS
	rw  io.ReadWriter // what commands and responses go through (TLS after StartTLS)
	br  *bufio.Reader // borrowed from readerPool while reading; nil while waiting (see waitInput)
	// first and pre hold the start of what a wait read, before br.
	first [firstSize]byte
	pre   imapwire.PrefixReader
	opts  Options
	log   *slog.Logger

	buf       []byte   // the response being parsed
	tagN      uint64   // last tag number used
	caps      []string // upper case; nil while unknown
	condstore bool     // ENABLE CONDSTORE done
	noopTag   string   // the keepalive NOOP waiting for its answer, "" if none
	noopSent  time.Time
	lastWrite time.Time

	notifying bool            // a NOTIFY SET is in effect, and hints are wanted
	armed     bool            // the server may have a NOTIFY SET in effect
	overflow  bool            // events were lost; Next returns ErrOverflow once
	boxes     map[string]*box // watched mailboxes by nameKey of both spellings
	pending   []event.Hint    // hints seen while a command ran, oldest first

	selected bool      // a mailbox is selected (Examine succeeded)
	idleTag  string    // the IDLE running, "" if none
	idleEnd  time.Time // when it has lasted the time Idle gave it
	updates  []Update  // updates on the selected mailbox not yet taken, oldest first

	err error // sticky: the connection is unusable

	closeMu     sync.Mutex // Close and Interrupt, from any goroutine
	closed      bool
	waiting     bool // NextUpdate waits for the server
	interrupted bool // Interrupt was called; the next (or current) wait returns
}

// New returns a client for conn, which is connected and, if it is to be,
// already in TLS (or see StartTLS). It does no I/O: call Greeting next.
func New(conn net.Conn, opts Options) *Client {
	if opts.CommandTimeout <= 0 {
		opts.CommandTimeout = DefaultCommandTimeout
	}
	if opts.Keepalive == 0 {
		opts.Keepalive = DefaultKeepalive
	}
	if opts.MaxResponse <= 0 {
		opts.MaxResponse = DefaultMaxResponse
	}
	if opts.MaxIdle <= 0 {
		opts.MaxIdle = DefaultMaxIdle
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Client{
		raw:       conn,
		rw:        conn,
		opts:      opts,
		log:       log,
		lastWrite: time.Now(),
	}
}

// Close closes the connection at once (no LOGOUT: see Logout). It is
// idempotent and safe from any goroutine; a call blocked in another
// goroutine returns an error.
func (c *Client) Close() error {
	c.closeMu.Lock()
	defer c.closeMu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	return c.raw.Close()
}

func (c *Client) isClosed() bool {
	c.closeMu.Lock()
	defer c.closeMu.Unlock()
	return c.closed
}

// fail makes err sticky and closes the connection; it returns the sticky
// error (the first one).
func (c *Client) fail(err error) error {
	if c.err == nil {
		if c.isClosed() {
			err = ErrClosed
		}
		c.err = err
		c.Close()
	}
	return c.err
}

// usable returns the sticky error, if any.
func (c *Client) usable() error {
	if c.err == nil && c.isClosed() {
		c.err = ErrClosed
	}
	return c.err
}

// watchContext makes the connection's deadlines expire when ctx ends, so
// that a blocked read or write returns. The returned stop must be called
// before the next deadline is set: it waits for a cancellation already
// under way, so that it cannot overwrite a later deadline.
func (c *Client) watchContext(ctx context.Context) (stop func()) {
	if ctx.Done() == nil {
		return func() {}
	}
	done := make(chan struct{})
	cancel := context.AfterFunc(ctx, func() {
		defer close(done)
		c.raw.SetDeadline(time.Unix(1, 0))
	})
	return func() {
		if !cancel() {
			<-done
		}
	}
}

// ctxErr turns an I/O error caused by ctx ending into ctx's error.
func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil && isTimeout(err) {
		return context.Cause(ctx)
	}
	return err
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// nextTag returns a new command tag.
func (c *Client) nextTag() string {
	c.tagN++
	return "n" + strconv.FormatUint(c.tagN, 10)
}

// readResponse reads one whole response (its lines and literals) into
// c.buf within CommandTimeout of starting, and parses it; ctx ending
// interrupts it (see watchContext). Of a response longer than MaxResponse
// only the start is kept and parsed, and tooLong is set.
func (c *Client) readResponse(ctx context.Context) (r *resp, tooLong bool, err error) {
	if err := c.raw.SetReadDeadline(time.Now().Add(c.opts.CommandTimeout)); err != nil {
		return nil, false, err
	}
	if err := ctx.Err(); err != nil {
		return nil, false, err
	}
	if cap(c.buf) > keepBuffer {
		c.buf = nil
	}
	c.buf, tooLong, err = readWhole(c.reader(), c.buf[:0], c.opts.MaxResponse)
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
			if len(c.buf) == 0 {
				err = io.EOF
			}
		}
		return nil, false, fmt.Errorf("read: %w", err)
	}
	r, err = parseResp(c.buf)
	if err != nil && !tooLong {
		return nil, false, fmt.Errorf("%w: %w in %q", errProtocol, err, truncate(c.buf, 120))
	}
	if err != nil {
		// What was kept of a long response may not parse; keep the tag.
		r = &resp{tag: firstWord(c.buf)}
	}
	return r, tooLong, nil
}

func truncate(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}

func firstWord(b []byte) string {
	s := string(truncate(b, 80))
	if i := strings.IndexAny(s, " \r\n"); i >= 0 {
		s = s[:i]
	}
	return s
}
