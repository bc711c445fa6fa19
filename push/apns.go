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
	"time"

	"github.com/sideshow/apns2"

	"github.com/xapsproxy/xapsproxy/config"
)

// Connection tuning for the one long-lived APNs client.
const (
	requestTimeout = 30 * time.Second // one push, including connecting
	dialTimeout    = 20 * time.Second
	tcpKeepAlive   = 15 * time.Second
	pingAfter      = 15 * time.Second // HTTP/2 PING after this long without frames
	pingTimeout    = 15 * time.Second // close the connection if the PING goes unanswered
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
	// RetryAfter is the Retry-After of a 429 or 503 answer; 0 when absent.
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

// APNs sends notifications to Apple over one long-lived HTTP/2 client, as
// Apple asks providers to: connections are kept open between pushes and
// checked with HTTP/2 PINGs. It is safe for concurrent use.
type APNs struct {
	client    *apns2.Client
	transport *http.Transport
}

// NewAPNs makes the APNs client for creds and the endpoint of cfg. It does
// no I/O: the connection is made by the first Send. Server certificates are
// verified against creds.RootCAs (which LoadCredentials fills from
// cfg.CAFile) or else the system roots.
func NewAPNs(creds *Credentials, cfg config.APNS) (*APNs, error) {
	if creds == nil || (creds.Certificate == nil && creds.Token == nil) {
		return nil, errors.New("push: no APNs credentials (neither certificate nor token key)")
	}
	if cfg.CAFile != "" && creds.RootCAs == nil {
		return nil, fmt.Errorf("push: apns ca_file %s is set but the credentials carry no roots; load them with LoadCredentials", cfg.CAFile)
	}
	host := cfg.EndpointURL()
	if u, err := url.Parse(host); err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("push: apns endpoint %q is not an https:// URL", host)
	}
	tlsConfig := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: creds.RootCAs}
	if creds.Certificate != nil {
		tlsConfig.Certificates = []tls.Certificate{*creds.Certificate}
	}
	// net/http's transport restricted to HTTP/2 (x/net/http2.Transport is
	// deprecated); it negotiates h2 by ALPN and keeps the connection.
	protocols := new(http.Protocols)
	protocols.SetHTTP2(true)
	dialer := &net.Dialer{Timeout: dialTimeout, KeepAlive: tcpKeepAlive}
	transport := &http.Transport{
		Protocols:           protocols,
		TLSClientConfig:     tlsConfig,
		DialContext:         dialer.DialContext,
		TLSHandshakeTimeout: dialTimeout,
		HTTP2:               &http.HTTP2Config{SendPingTimeout: pingAfter, PingTimeout: pingTimeout},
	}
	client := &apns2.Client{
		Host:       host,
		Token:      creds.Token,
		HTTPClient: &http.Client{Transport: transport, Timeout: requestTimeout},
	}
	if creds.Certificate != nil {
		client.Certificate = *creds.Certificate
	}
	return &APNs{client: client, transport: transport}, nil
}

// Send pushes n to APNs.
func (a *APNs) Send(ctx context.Context, n Notification) (Response, error) {
	return send(ctx, a.client, n)
}

// Close closes idle connections to APNs. Sends after Close reconnect.
func (a *APNs) Close() { a.transport.CloseIdleConnections() }

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
