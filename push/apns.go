package push

import (
	"context"
	"crypto/md5"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sideshow/apns2"
	"github.com/sideshow/apns2/token"

	"github.com/xapsproxy/xapsproxy/config"
)

// Connection tuning for the long-lived APNs connections.
const (
	requestTimeout = 30 * time.Second // one push, including connecting
	dialTimeout    = 20 * time.Second
	tcpKeepAlive   = 15 * time.Second
	pingAfter      = 15 * time.Second // HTTP/2 PING after this long without frames
	pingTimeout    = 15 * time.Second // close the connection if the PING goes unanswered

	// maxRetryAfter caps Response.RetryAfter: a longer wait is more likely a
	// broken header than Apple's intent, and a push waiting longer would be
	// stale anyway.
	maxRetryAfter = time.Hour
	// minTokenAge is how old a provider token must be before an
	// ExpiredProviderToken answer makes APNs sign a new one: APNs refuses
	// tokens renewed more often than every 20 minutes
	// (TooManyProviderTokenUpdates).
	minTokenAge = 20 * time.Minute
)

// Notification is one Mail push to one device.
type Notification struct {
	DeviceToken string    // 64 hex digits
	Topic       string    // apns-topic: the topic the proxy answered to the device
	AccountID   string    // aps-account-id the device registered with
	Expiration  time.Time // apns-expiration; APNs stores the push until then
	// Mailboxes are the registered mailboxes with news, spelled as the
	// device registered them; the payload names each by the MD5 of that
	// name. None = no "m" in the payload.
	Mailboxes []string
	// Priority is the apns-priority header; 0 sends none (APNs assumes 10).
	Priority int
}

// Response is APNs's answer to one push.
type Response struct {
	StatusCode int    // HTTP status: 200 = accepted
	Reason     string // APNs reason for a rejection, e.g. "Unregistered"
	APNsID     string // apns-id of the notification
	// RetryAfter is how long the answer's Retry-After header (seconds or
	// an HTTP date, as APNs may send with 429 or 503) asks to wait before
	// trying again, at most an hour; 0 when the header is absent, in the
	// past or unreadable.
	RetryAfter time.Duration
}

// String is the status and reason, e.g. "200" or "410 Unregistered".
func (r Response) String() string {
	if r.Reason == "" {
		return strconv.Itoa(r.StatusCode)
	}
	return strconv.Itoa(r.StatusCode) + " " + r.Reason
}

// Sender delivers one notification. An error means no answer was received
// (connection or TLS failure, timeout, cancelled ctx); an APNs rejection is a
// Response with a status other than 200 and a nil error.
type Sender interface {
	Send(ctx context.Context, n Notification) (Response, error)
}

// Payload returns the body of a Mail push, as Apple's own mail server sent
// it: {"aps":{"account-id":"<id>","m":["<md5 hex>",...]}}, one entry per
// mailbox, in the order given, each the MD5 of the name exactly as the
// device registered it. Mail fetches the mailboxes it names; with no
// mailboxes the "m" key is left out (as the original open-source daemon
// did, with which only INBOX pushes were seen to work).
func Payload(accountID string, mailboxes []string) []byte {
	type aps struct {
		AccountID string   `json:"account-id"`
		M         []string `json:"m,omitempty"`
	}
	a := aps{AccountID: accountID}
	for _, m := range mailboxes {
		sum := md5.Sum([]byte(m))
		a.M = append(a.M, hex.EncodeToString(sum[:]))
	}
	body, err := json.Marshal(struct {
		APS aps `json:"aps"`
	}{a})
	if err != nil {
		panic("push: marshal payload: " + err.Error()) // strings only: cannot happen
	}
	return body
}

// apns2Notification is the single place where a Notification becomes an
// APNs request, shared by APNs and LogSender: background push type, the
// priority when set (none by default: APNs then assumes 10), expiration,
// and the Mail payload.
func (n Notification) apns2Notification() *apns2.Notification {
	return &apns2.Notification{
		DeviceToken: n.DeviceToken,
		Topic:       n.Topic,
		Expiration:  n.Expiration,
		PushType:    apns2.PushTypeBackground,
		Priority:    n.Priority,
		Payload:     Payload(n.AccountID, n.Mailboxes),
	}
}

// send pushes n through c; APNs and LogSender differ only in c's transport.
func send(ctx context.Context, c *apns2.Client, n Notification) (Response, error) {
	if n.Expiration.IsZero() {
		return Response{}, errors.New("push: notification has no expiration")
	}
	res, err := c.PushWithContext(ctx, n.apns2Notification())
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // drop "Post <url>:", the caller logs the token
		}
		return Response{}, fmt.Errorf("post to apns: %w", err)
	}
	return Response{StatusCode: res.StatusCode, Reason: res.Reason, APNsID: res.ApnsID}, nil
}

// APNs sends notifications to Apple over long-lived HTTP/2 connections, as
// Apple asks providers to: connections are kept open between pushes and
// checked with HTTP/2 PINGs. It keeps several independent connections
// (config.APNS.Connections), each with its own client and transport, and
// gives each push to the one with the fewest pushes in flight: a
// connection reads and writes its frames on one goroutine each, so more
// connections spread the TLS and framing work over more cores, and a
// connection that stalls (until its PING fails) or reconnects after a
// GOAWAY does not hold up the pushes on the others. With token authentication every
// connection signs with the same provider token. It is safe for concurrent
// use.
//
// Reload replaces the credential without a pause: the connections are
// made anew for it (see apnsPool), and pushes already in flight finish on
// the old ones, which are closed after the last of them.
type APNs struct {
	cfg   config.APNS
	host  string
	n     int    // connections per pool
	topic string // of the credential; Reload keeps it

	reload sync.Mutex // one Reload at a time
	cur    atomic.Pointer[apnsPool]
}

// apnsPool is the connections made for one credential. Sends hold it
// (acquire, release) while they use it; once Reload has put another in
// its place and the last send is done, its connections are closed.
type apnsPool struct {
	conns []*apnsConn
	token *token.Token // nil with certificate authentication

	mu      sync.Mutex
	users   int  // sends using the pool
	retired bool // replaced: close when users is 0
}

// apnsConn is one client, with the transport that keeps its connection.
type apnsConn struct {
	client    *apns2.Client
	transport *http.Transport
	inFlight  atomic.Int64
}

// NewAPNs makes the APNs client for creds and the endpoint of cfg, with
// cfg.Connections connections (0 = config.DefaultAPNsConnections). It does
// no I/O: each connection is made by the first Send that needs it. Server
// certificates are verified against creds.RootCAs (which LoadCredentials
// fills from cfg.CAFile) or else the system roots.
func NewAPNs(creds *Credentials, cfg config.APNS) (*APNs, error) {
	host := cfg.EndpointURL()
	if u, err := url.Parse(host); err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("push: apns endpoint %q is not an https:// URL", host)
	}
	n := cfg.Connections
	if n == 0 {
		n = config.DefaultAPNsConnections
	}
	if n < 1 || n > config.MaxAPNsConnections {
		return nil, fmt.Errorf("push: apns connections %d is out of range 1 to %d", cfg.Connections, config.MaxAPNsConnections)
	}
	a := &APNs{cfg: cfg, host: host, n: n}
	p, err := a.newPool(creds)
	if err != nil {
		return nil, err
	}
	a.topic = creds.Topic
	a.cur.Store(p)
	return a, nil
}

// ErrTopicChanged is wrapped by Reload's error for a credential of
// another topic than the current one.
var ErrTopicChanged = errors.New("the new credential is for another topic")

// Reload makes every push from now on go with creds, on new connections;
// pushes in flight finish on the old ones, which are closed when the last
// of them is done. It refuses (and keeps the current credential) when
// creds is for another topic than the current one: devices registered
// with the topic they were answered, and a push to another one fails
// with DeviceTokenNotForTopic until each registers again.
func (a *APNs) Reload(creds *Credentials) error {
	a.reload.Lock()
	defer a.reload.Unlock()
	if creds != nil && creds.Topic != a.topic {
		return fmt.Errorf("push: %w (%s, not %s)", ErrTopicChanged, creds.Topic, a.topic)
	}
	p, err := a.newPool(creds)
	if err != nil {
		return err
	}
	a.cur.Swap(p).retire()
	return nil
}

// newPool makes the connections for creds; it does no I/O.
func (a *APNs) newPool(creds *Credentials) (*apnsPool, error) {
	if creds == nil || (creds.Certificate == nil && creds.Token == nil) {
		return nil, errors.New("push: no APNs credentials (neither certificate nor token key)")
	}
	if a.cfg.CAFile != "" && creds.RootCAs == nil {
		return nil, fmt.Errorf("push: apns ca_file %s is set but the credentials carry no roots; load them with LoadCredentials", a.cfg.CAFile)
	}
	tlsConfig := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: creds.RootCAs}
	if creds.Certificate != nil {
		tlsConfig.Certificates = []tls.Certificate{*creds.Certificate}
	}
	p := &apnsPool{token: creds.Token}
	for range a.n {
		// net/http's transport restricted to HTTP/2 (x/net/http2.Transport
		// is deprecated); it negotiates h2 by ALPN and keeps the connection.
		// For HTTP/2, MaxConnsPerHost bounds the connections being dialed
		// at once: a burst of pushes on a fresh transport waits for one
		// connection instead of dialing one each. The transport still opens
		// another if APNs's stream limit is reached.
		protocols := new(http.Protocols)
		protocols.SetHTTP2(true)
		dialer := &net.Dialer{Timeout: dialTimeout, KeepAlive: tcpKeepAlive}
		transport := &http.Transport{
			Protocols:           protocols,
			TLSClientConfig:     tlsConfig.Clone(), // each transport adds its ALPN protocols to it
			DialContext:         dialer.DialContext,
			TLSHandshakeTimeout: dialTimeout,
			MaxConnsPerHost:     1,
			HTTP2:               &http.HTTP2Config{SendPingTimeout: pingAfter, PingTimeout: pingTimeout},
		}
		client := &apns2.Client{
			Host:  a.host,
			Token: creds.Token, // shared: one provider token for all connections
			// No Client.Timeout: it costs a goroutine per request; Send
			// bounds each push with a context deadline instead.
			HTTPClient: &http.Client{Transport: headerCapture{transport}},
		}
		if creds.Certificate != nil {
			client.Certificate = *creds.Certificate
		}
		p.conns = append(p.conns, &apnsConn{client: client, transport: transport})
	}
	return p, nil
}

// acquire returns the current pool, held until release.
func (a *APNs) acquire() *apnsPool {
	for {
		p := a.cur.Load()
		p.mu.Lock()
		if !p.retired {
			p.users++
			p.mu.Unlock()
			return p
		}
		p.mu.Unlock() // replaced just now: the new one is in cur
	}
}

// release ends a send's hold on p; the last on a retired pool closes it.
func (p *apnsPool) release() {
	p.mu.Lock()
	p.users--
	last := p.retired && p.users == 0
	p.mu.Unlock()
	if last {
		p.close()
	}
}

// retire marks p replaced, and closes it if no send holds it.
func (p *apnsPool) retire() {
	p.mu.Lock()
	p.retired = true
	idle := p.users == 0
	p.mu.Unlock()
	if idle {
		p.close()
	}
}

// retiredCloseAgain is when a retired pool's connections are closed once
// more: a send's stream may still be winding down in the HTTP/2
// transport's own goroutines when the send returns, and a connection
// with a stream open is not idle to CloseIdleConnections.
const retiredCloseAgain = 500 * time.Millisecond

// close closes a retired pool's connections now and, for one whose last
// stream was still ending, a little later; no send uses the pool again.
func (p *apnsPool) close() {
	p.closeIdle()
	time.AfterFunc(retiredCloseAgain, p.closeIdle)
	time.AfterFunc(10*retiredCloseAgain, p.closeIdle)
}

func (p *apnsPool) closeIdle() {
	for _, c := range p.conns {
		c.transport.CloseIdleConnections()
	}
}

// Send pushes n to APNs over the connection with the fewest pushes in
// flight. A push that gets no answer is bounded by ctx and by
// requestTimeout (30s), whichever ends first.
//
// With token authentication the provider token is signed once and reused
// by every connection: apns2 signs a new one only after 50 minutes, within
// APNs's rule (not more often than every 20 minutes, not older than an
// hour). If APNs still answers ExpiredProviderToken (a clock step, say), a
// new token is signed at once, unless the current one is under 20 minutes
// old.
func (a *APNs) Send(ctx context.Context, n Notification) (Response, error) {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	p := a.acquire()
	defer p.release()
	c := p.pick()
	c.inFlight.Add(1)
	defer c.inFlight.Add(-1)
	var h answerHeader
	res, err := send(context.WithValue(ctx, answerKey{}, &h), c.client, n)
	if err != nil {
		return res, err
	}
	res.RetryAfter = parseRetryAfter(h.retryAfter, time.Now())
	if res.StatusCode == http.StatusForbidden && res.Reason == apns2.ReasonExpiredProviderToken {
		p.renewToken(time.Now())
	}
	return res, nil
}

// pick returns the connection with the fewest pushes in flight, the first
// such: pushes one at a time all use the first connection, and the others
// are opened only when pushes overlap.
func (p *apnsPool) pick() *apnsConn {
	best := p.conns[0]
	least := best.inFlight.Load()
	for _, c := range p.conns[1:] {
		if least == 0 {
			break
		}
		if f := c.inFlight.Load(); f < least {
			best, least = c, f
		}
	}
	return best
}

// renewToken signs a new provider token if the current one is at least
// minTokenAge old at now.
func (p *apnsPool) renewToken(now time.Time) {
	t := p.token
	if t == nil {
		return
	}
	t.Lock()
	defer t.Unlock()
	if now.Sub(time.Unix(t.IssuedAt, 0)) < minTokenAge {
		return
	}
	// On failure (which LoadCredentials's own signing would have caught)
	// the old token stays, and the next ExpiredProviderToken tries again.
	_, _ = t.Generate()
}

// Close closes the idle connections to APNs, on every client. Sends after
// Close reconnect.
func (a *APNs) Close() {
	a.cur.Load().closeIdle()
}

// answerKey is the context key of the *answerHeader a Send fills.
type answerKey struct{}

// answerHeader carries the response headers apns2.Response leaves out from
// the transport back to Send.
type answerHeader struct {
	retryAfter string
}

// headerCapture is a RoundTripper that copies the Retry-After header of
// each answer into the request context's answerHeader. RoundTrip runs on
// the goroutine of the Send that made the request, so no locking is
// needed.
type headerCapture struct{ base http.RoundTripper }

func (h headerCapture) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := h.base.RoundTrip(req)
	if err == nil {
		if slot, ok := req.Context().Value(answerKey{}).(*answerHeader); ok {
			slot.retryAfter = resp.Header.Get("Retry-After")
		}
	}
	return resp, err
}

// parseRetryAfter reads a Retry-After value, delay seconds or an HTTP date
// (RFC 9110 section 10.2.3), as a wait from now, capped at maxRetryAfter. A
// missing or unreadable value, or a date in the past, is 0.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	var d time.Duration
	if secs, err := strconv.ParseUint(v, 10, 64); err == nil {
		if secs > uint64(maxRetryAfter/time.Second) {
			return maxRetryAfter
		}
		d = time.Duration(secs) * time.Second
	} else if errors.Is(err, strconv.ErrRange) {
		return maxRetryAfter // all digits, just very many
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	}
	return min(max(d, 0), maxRetryAfter)
}

// LogSender is the Sender of demo mode: it sends nothing, logs the exact
// request APNs would receive (built by the same code as APNs uses) and
// answers 200.
type LogSender struct {
	client *apns2.Client
}

// NewLogSender makes a LogSender that logs to logger (nil = slog.Default())
// requests for the endpoint of cfg.
func NewLogSender(logger *slog.Logger, cfg config.APNS) *LogSender {
	if logger == nil {
		logger = slog.Default()
	}
	return &LogSender{client: &apns2.Client{
		Host:       cfg.EndpointURL(),
		HTTPClient: &http.Client{Transport: logTransport{logger}},
	}}
}

// Send logs the request for n and answers 200.
func (l *LogSender) Send(ctx context.Context, n Notification) (Response, error) {
	return send(ctx, l.client, n)
}

// logTransport logs requests instead of sending them.
type logTransport struct{ logger *slog.Logger }

func (t logTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	var body []byte
	if req.Body != nil {
		b, err := io.ReadAll(req.Body)
		_ = req.Body.Close()
		if err != nil {
			return nil, err
		}
		body = b
	}
	var headers []any
	for _, name := range slices.Sorted(maps.Keys(req.Header)) {
		for _, v := range req.Header[name] {
			name := strings.ToLower(name) // as HTTP/2 sends them
			if name == "authorization" {
				v = "<redacted>"
			}
			headers = append(headers, slog.String(name, v))
		}
	}
	t.logger.InfoContext(req.Context(), "demo mode: not sending; APNs would get this request",
		"request", req.Method+" "+req.URL.Path+" HTTP/2",
		"host", req.URL.Host,
		slog.Group("headers", headers...),
		"body", string(body))
	return &http.Response{
		Status:     "200 OK",
		StatusCode: http.StatusOK,
		Proto:      "HTTP/2.0",
		ProtoMajor: 2,
		Header:     http.Header{"Apns-Id": {"demo"}},
		Body:       http.NoBody,
		Request:    req,
	}, nil
}
