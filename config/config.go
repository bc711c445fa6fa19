// Package config reads xapsproxy's TOML configuration file into one validated
// Config. Every key is documented in config.example.toml at the repository
// root; Load rejects unknown keys and bad values with an error that names the
// key, so a typo never silently falls back to a default.
package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// Config is the whole configuration of one xapsproxy process.
type Config struct {
	Proxy   Proxy   `toml:"proxy"`
	Backend Backend `toml:"backend"`
	Watch   Watch   `toml:"watch"`
	APNS    APNS    `toml:"apns"`
	Store   Store   `toml:"store"`
	Admin   Admin   `toml:"admin"`
	Events  Events  `toml:"events"`
	Log     Log     `toml:"log"`
}

// Proxy is the client-facing side: where iPhone Mail and other clients connect.
type Proxy struct {
	ListenTLS      string `toml:"listen_tls"`      // implicit TLS (IMAPS), e.g. ":993"; "" = off
	ListenSTARTTLS string `toml:"listen_starttls"` // plain IMAP with STARTTLS, e.g. ":143"; "" = off
	CertFile       string `toml:"cert_file"`       // PEM certificate chain presented to clients
	KeyFile        string `toml:"key_file"`        // PEM private key for CertFile

	MaxConnections      int           `toml:"max_connections"`        // client connections at once; 0 = no limit
	MaxConnectionsPerIP int           `toml:"max_connections_per_ip"` // from one client address; 0 = no limit
	LoginTimeout        time.Duration `toml:"login_timeout"`          // connect to successful login
	IdleTimeout         time.Duration `toml:"idle_timeout"`           // client silence after login; >= 30m (RFC 9051)
	WriteTimeout        time.Duration `toml:"write_timeout"`          // a client that takes no data this long is cut off
	// AllowPlaintextAuth lets clients log in on the STARTTLS listener without
	// STARTTLS. Only for a loopback listen_starttls (local tools, tests).
	AllowPlaintextAuth bool `toml:"allow_plaintext_auth"`
	// AllowMasterLogins lets clients log in as master users themselves: a
	// user name with watch.master_separator in it, or a SASL authorization
	// identity other than the authentication identity. Off, such logins are
	// refused before they reach the backend.
	AllowMasterLogins bool `toml:"allow_master_logins"`
	// ProxyProtocol lists the TCP load balancers (IP addresses or CIDR
	// networks) trusted to send a PROXY protocol header, v1 or v2. A
	// connection from one must start with one, and is served as the client
	// it names; another address that sends one is cut off. Empty = off.
	ProxyProtocol []string `toml:"proxy_protocol"`
}

// Backend TLS modes.
const (
	BackendTLSNone     = "none"
	BackendTLSStartTLS = "starttls"
	BackendTLSImplicit = "implicit"
)

// Backend is the real IMAP server the proxy forwards to.
type Backend struct {
	Address         string `toml:"address"`           // host:port of the IMAP server
	TLS             string `toml:"tls"`               // "none" (default), "starttls" or "implicit"
	CAFile          string `toml:"ca_file"`           // extra roots to verify the backend; "" = system roots
	ServerName      string `toml:"server_name"`       // name to verify; "" = host part of Address
	ForwardClientIP bool   `toml:"forward_client_ip"` // send the client's address in an ID command before login
	// UsernameFormat is how the backend names the user a client logs in
	// as: Dovecot's auth_username_format (%u, %Lu, %n or %Ln).
	UsernameFormat string `toml:"username_format"`
}

// Watch auth and mode values.
const (
	AuthMaster    = "master"
	AuthCaptured  = "captured"
	SourceAuto    = "auto"
	SourceDovecot = "dovecot"
	SourceNotify  = "notify"
	SourceIdle    = "idle"
)

// Watch says how the proxy logs in to the backend to watch registered mailboxes.
type Watch struct {
	Auth               string `toml:"auth"`                 // "master" (default) or "captured" (each user's own password)
	MasterUser         string `toml:"master_user"`          // Dovecot master user name
	MasterPassword     string `toml:"master_password"`      // its password (or use MasterPasswordFile)
	MasterPasswordFile string `toml:"master_password_file"` // file holding the password; trailing newline ignored
	MasterSeparator    string `toml:"master_separator"`     // between user and master name; default "*"
	SecretKeyFile      string `toml:"secret_key_file"`      // key for captured passwords (auth = "captured"); default secret.key beside store.path; required with store.postgres
	Source             string `toml:"source"`               // "auto" (default), "dovecot", "notify" or "idle"
	// PollInterval is how often the IDLE source looks at registered
	// mailboxes other than the one in IDLE.
	PollInterval time.Duration `toml:"poll_interval"`
	// CatchUpRate bounds the accounts a second looked at after a start
	// with Dovecot's events.
	CatchUpRate float64 `toml:"catchup_rate"`
	// CatchUpInterval is how often that look is repeated; 0 never.
	CatchUpInterval time.Duration `toml:"catchup_interval"`
	// MaxConcurrentLogins bounds the backend connections being opened and
	// logged in at once, over all watchers.
	MaxConcurrentLogins int `toml:"max_concurrent_logins"`
	// ChangeDelay is how long flag changes and expunges in a registered
	// mailbox wait for quiet before they are pushed: one push this long
	// after the last change, or none of its own if new mail is pushed first.
	ChangeDelay time.Duration `toml:"change_delay"`
	// ChangeInterval is the storm guard: pushes for changes alone reach a
	// device at most once per interval; 0 turns it off.
	ChangeInterval time.Duration `toml:"change_interval"`
}

// APNs endpoints.
const (
	EndpointProduction  = "production"
	EndpointDevelopment = "development"
)

// APNS holds the credentials and endpoint for Apple's push service.
type APNS struct {
	CertificateFile     string `toml:"certificate_file"`     // PEM (cert, and key unless KeyFile) or .p12
	KeyFile             string `toml:"key_file"`             // PEM key when not inside CertificateFile
	CertificatePassword string `toml:"certificate_password"` // password of a .p12 file
	TokenKeyFile        string `toml:"token_key_file"`       // .p8 key for token authentication
	KeyID               string `toml:"key_id"`               // token auth: key id
	TeamID              string `toml:"team_id"`              // token auth: team id
	Topic               string `toml:"topic"`                // default: the certificate's UID
	Endpoint            string `toml:"endpoint"`             // "production" (default), "development" or an https:// URL
	CAFile              string `toml:"ca_file"`              // extra roots to verify the endpoint (tests, staging)
	// MailboxHash puts the mailboxes with news in each push ("m": the MD5
	// of each name), as Apple's own server did. Default true.
	MailboxHash bool `toml:"mailbox_hash"`
	// Priority is the apns-priority header: 0 (the default) sends none, as
	// the reference daemon did, so APNs assumes 10; 5 is what Apple's rules
	// ask of background pushes; 10 is immediate delivery.
	Priority int `toml:"priority"`
	// Concurrency bounds the pushes in flight to APNs at once: the pushes
	// a second are about Concurrency divided by the round trip to Apple.
	Concurrency int `toml:"concurrency"`
	// Connections is how many HTTP/2 connections to APNs the pushes are
	// spread over; each carries many pushes at once.
	Connections int `toml:"connections"`
}

// Admin is the HTTP listener for /healthz, /readyz, /metrics and the status
// page.
type Admin struct {
	Listen string `toml:"listen"` // default "127.0.0.1:9143"; "" = off
	// Token, when set, is required (Authorization: Bearer, or the cookie
	// /status?token= sets) by every endpoint but /healthz and /readyz;
	// required when Listen is not a loopback address.
	Token     string `toml:"token"`
	TokenFile string `toml:"token_file"` // file holding it; trailing newline ignored
}

// Events is the HTTP listener for Dovecot's own mail events, posted by
// contrib/dovecot/xapsproxy.lua (package dovecot). It is on iff a secret is
// configured.
type Events struct {
	Listen     string `toml:"listen"`      // default "127.0.0.1:9144"
	Secret     string `toml:"secret"`      // bearer secret Dovecot sends (or use SecretFile)
	SecretFile string `toml:"secret_file"` // file holding it; trailing newline ignored
}

// Log formats and levels.
const (
	LogFormatText = "text"
	LogFormatJSON = "json"
	LogLevelDebug = "debug"
	LogLevelInfo  = "info"
	LogLevelWarn  = "warn"
	LogLevelError = "error"
)

// Log is how xapsproxy writes its log lines to stderr.
type Log struct {
	Format string `toml:"format"` // "text" (default, key=value) or "json" (one object a line)
	Level  string `toml:"level"`  // "debug", "info" (default), "warn" or "error"
}

func (l *Log) validate() error {
	switch l.Format {
	case LogFormatText, LogFormatJSON:
	default:
		return keyError("log.format", `%q is not one of "text", "json" (default "text")`, l.Format)
	}
	switch l.Level {
	case LogLevelDebug, LogLevelInfo, LogLevelWarn, LogLevelError:
	default:
		return keyError("log.level", `%q is not one of "debug", "info", "warn", "error" (default "info")`, l.Level)
	}
	return nil
}

// Enabled reports whether the events listener is on: a secret is set.
func (e *Events) Enabled() bool { return e.Secret != "" }

// Defaults applied to keys the file leaves out.
const (
	DefaultMaxConnections      = 10000
	DefaultMaxConnectionsPerIP = 100
	DefaultLoginTimeout        = time.Minute
	DefaultIdleTimeout         = 35 * time.Minute
	// DefaultWriteTimeout is how long a write to a client may wait for the
	// client to take data; a slow reader is fine, a stalled one is cut.
	DefaultWriteTimeout = 5 * time.Minute
	// MinIdleTimeout is RFC 9051 section 5.4's floor for the autologout timer.
	MinIdleTimeout = 30 * time.Minute

	DefaultBackendTLS      = BackendTLSNone
	DefaultAuth            = AuthMaster
	DefaultMasterSeparator = "*"
	DefaultSource          = SourceAuto
	DefaultPollInterval    = 2 * time.Minute
	DefaultCatchUpRate     = 50
	DefaultCatchUpInterval = 6 * time.Hour
	DefaultEndpoint        = EndpointProduction
	DefaultStorePath       = "xapsproxy.db"
	// DefaultSecretKeyFile is the key file of auth = "captured", in the
	// directory of store.path when secret_key_file is not set.
	DefaultSecretKeyFile = "secret.key"
	DefaultAdminListen   = "127.0.0.1:9143"
	DefaultEventsListen  = "127.0.0.1:9144"
	DefaultLogFormat     = LogFormatText
	DefaultLogLevel      = LogLevelInfo
)

// Bounds of apns.concurrency and apns.connections. At a 50 ms round trip
// to Apple, 500 pushes in flight are about 10 000 pushes a second; APNs
// takes many concurrent streams on one connection, and a second connection
// spreads the TLS and framing work over two cores.
const (
	DefaultAPNsConcurrency = 500
	MaxAPNsConcurrency     = 10000
	DefaultAPNsConnections = 2
	MaxAPNsConnections     = 64
)

// DefaultMaxConcurrentLogins is well under the listen backlog of Dovecot's
// login service (100 with its default process_limit).
const DefaultMaxConcurrentLogins = 16

// Bounds of watch.change_delay.
const (
	DefaultChangeDelay    = 30 * time.Second
	DefaultChangeInterval = 2 * time.Minute
	MinChangeDelay        = time.Second
	MaxChangeDelay        = time.Hour
)

// Load reads and validates the file at path. Relative file names inside it are
// resolved against the directory holding the file.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	cfg, err := Parse(string(data), filepath.Dir(path))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

// Parse decodes and validates a TOML document. Relative file names are
// resolved against dir.
func Parse(doc, dir string) (*Config, error) {
	cfg := &Config{
		Proxy: Proxy{
			MaxConnections:      DefaultMaxConnections,
			MaxConnectionsPerIP: DefaultMaxConnectionsPerIP,
			LoginTimeout:        DefaultLoginTimeout,
			IdleTimeout:         DefaultIdleTimeout,
			WriteTimeout:        DefaultWriteTimeout,
		},
		Backend: Backend{TLS: DefaultBackendTLS, UsernameFormat: DefaultUsernameFormat},
		Watch: Watch{Auth: DefaultAuth, MasterSeparator: DefaultMasterSeparator, Source: DefaultSource, PollInterval: DefaultPollInterval,
			CatchUpRate: DefaultCatchUpRate, CatchUpInterval: DefaultCatchUpInterval, MaxConcurrentLogins: DefaultMaxConcurrentLogins, ChangeDelay: DefaultChangeDelay,
			ChangeInterval: DefaultChangeInterval},
		APNS:   APNS{Endpoint: DefaultEndpoint, MailboxHash: true, Concurrency: DefaultAPNsConcurrency, Connections: DefaultAPNsConnections},
		Store:  Store{Path: DefaultStorePath},
		Admin:  Admin{Listen: DefaultAdminListen},
		Events: Events{Listen: DefaultEventsListen},
		Log:    Log{Format: DefaultLogFormat, Level: DefaultLogLevel},
	}
	md, err := toml.Decode(doc, cfg)
	if err != nil {
		var perr toml.ParseError
		if errors.As(err, &perr) {
			if perr.LastKey != "" {
				return nil, fmt.Errorf("line %d: %s: %s", perr.Position.Line, perr.LastKey, perr.Message)
			}
			return nil, fmt.Errorf("line %d: %s", perr.Position.Line, perr.Message)
		}
		return nil, err
	}
	if undecoded := md.Undecoded(); len(undecoded) > 0 {
		keys := make([]string, len(undecoded))
		for i, k := range undecoded {
			keys[i] = k.String()
		}
		return nil, fmt.Errorf("unknown key %s — check the spelling and the [section]; config.example.toml lists every key", strings.Join(keys, ", "))
	}
	if err := cfg.Store.settle(md); err != nil {
		return nil, err
	}
	cfg.resolvePaths(dir)
	// Beside a SQLite file; a PostgreSQL store has no directory, and
	// validate asks for the key file to be named.
	if cfg.Watch.Auth == AuthCaptured && cfg.Watch.SecretKeyFile == "" && !cfg.Store.IsPostgres() {
		cfg.Watch.SecretKeyFile = filepath.Join(filepath.Dir(cfg.Store.Path), DefaultSecretKeyFile)
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

func (c *Config) resolvePaths(dir string) {
	for _, p := range []*string{
		&c.Proxy.CertFile, &c.Proxy.KeyFile,
		&c.Backend.CAFile,
		&c.Watch.MasterPasswordFile, &c.Watch.SecretKeyFile,
		&c.APNS.CertificateFile, &c.APNS.KeyFile, &c.APNS.TokenKeyFile, &c.APNS.CAFile,
		&c.Store.Path, &c.Store.PostgresFile,
		&c.Events.SecretFile,
		&c.Admin.TokenFile,
	} {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
}

// keyError names the offending key in a validation error.
func keyError(key, format string, args ...any) error {
	return fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...))
}

func (c *Config) validate() error {
	for _, check := range []func() error{c.Proxy.validate, c.Backend.validate, c.Watch.validate, c.APNS.validate, c.validateRest, c.Events.validate, c.Log.validate} {
		if err := check(); err != nil {
			return err
		}
	}
	if c.Watch.Auth == AuthCaptured && c.Watch.SecretKeyFile == "" { // only with PostgreSQL: see Parse
		return keyError("watch.secret_key_file", `required with auth = "captured" and %s — name the file holding the key of the captured passwords `+
			`(serve creates it if it does not exist); every instance sharing the database needs a copy of the same file`, c.Store.Key())
	}
	if c.Watch.Source == SourceDovecot && c.Events.Secret == "" {
		return keyError("watch.source", `"dovecot" needs [events] secret or secret_file (the same secret as xapsproxy_secret in Dovecot) — set one, or use source = "auto"`)
	}
	return nil
}

func (p *Proxy) validate() error {
	if p.ListenTLS == "" && p.ListenSTARTTLS == "" {
		return keyError("proxy.listen_tls", `set listen_tls (e.g. ":993") and/or listen_starttls (e.g. ":143")`)
	}
	for _, l := range []struct{ key, addr, example string }{
		{"proxy.listen_tls", p.ListenTLS, ":993"},
		{"proxy.listen_starttls", p.ListenSTARTTLS, ":143"},
	} {
		if l.addr == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(l.addr); err != nil {
			return keyError(l.key, "%q is not host:port (%v) — e.g. %q for every address of this machine", l.addr, err, l.example)
		}
	}
	if p.CertFile == "" {
		return keyError("proxy.cert_file", "required — clients are only served over TLS: name the PEM certificate chain of the host name they connect to")
	}
	if p.KeyFile == "" {
		return keyError("proxy.key_file", "required with cert_file — name the PEM private key of cert_file")
	}
	if p.MaxConnections < 0 {
		return keyError("proxy.max_connections", "must not be negative — 0 means no limit")
	}
	if p.MaxConnectionsPerIP < 0 {
		return keyError("proxy.max_connections_per_ip", "must not be negative — 0 means no limit")
	}
	if p.LoginTimeout <= 0 {
		return keyError("proxy.login_timeout", `must be positive — e.g. "60s"`)
	}
	if p.IdleTimeout < MinIdleTimeout {
		return keyError("proxy.idle_timeout", `%v is below 30m — clients may stay silent that long in IDLE (RFC 9051 section 5.4); set at least "30m"`, p.IdleTimeout)
	}
	if p.WriteTimeout < time.Second {
		return keyError("proxy.write_timeout", "%v is too short: at least \"1s\" (default \"5m\")", p.WriteTimeout)
	}
	for _, n := range p.ProxyProtocol {
		if _, err := parsePrefix(n); err != nil {
			return keyError("proxy.proxy_protocol", `%q is neither an IP address nor a network (%v) — list the load balancers' addresses, e.g. ["10.0.0.5", "10.1.0.0/16"]`, n, err)
		}
	}
	if p.AllowPlaintextAuth && !isLoopback(p.ListenSTARTTLS) {
		return keyError("proxy.allow_plaintext_auth", `only allowed when listen_starttls is a loopback address — set it to false, or listen_starttls to e.g. "127.0.0.1:143"`)
	}
	return nil
}

// isLoopback reports whether a listen address binds loopback only.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func (b *Backend) validate() error {
	if b.Address == "" {
		return keyError("backend.address", `required — the host:port of the IMAP server, e.g. "127.0.0.1:143"`)
	}
	if _, _, err := net.SplitHostPort(b.Address); err != nil {
		return keyError("backend.address", `%q is not host:port (%v) — e.g. "127.0.0.1:143"`, b.Address, err)
	}
	switch b.TLS {
	case BackendTLSNone, BackendTLSStartTLS, BackendTLSImplicit:
	default:
		return keyError("backend.tls", "%q is not one of none, starttls, implicit", b.TLS)
	}
	if b.TLS == BackendTLSNone && (b.CAFile != "" || b.ServerName != "") {
		return keyError("backend.tls", `ca_file and server_name need tls = "starttls" or "implicit"`)
	}
	f, ok := usernameFormat(b.UsernameFormat)
	if !ok {
		return keyError("backend.username_format", `%q is not one of "%%u", "%%Lu", "%%n", "%%Ln" (Dovecot 2.4: "%%{user}", "%%{user | lower}", "%%{user | username}", "%%{user | username | lower}") — use the value of Dovecot's auth_username_format (default "%%Lu")`, b.UsernameFormat)
	}
	b.UsernameFormat = f
	return nil
}

func (w *Watch) validate() error {
	switch w.Auth {
	case AuthMaster:
		if err := w.validateMaster(); err != nil {
			return err
		}
	case AuthCaptured:
		if err := w.validateCaptured(); err != nil {
			return err
		}
	default:
		return keyError("watch.auth", "%q is not one of master, captured", w.Auth)
	}
	if w.MasterSeparator == "" {
		return keyError("watch.master_separator", "must not be empty")
	}
	switch w.Source {
	case SourceAuto, SourceIdle, SourceDovecot, SourceNotify:
	default:
		return keyError("watch.source", "%q is not one of auto, dovecot, notify, idle", w.Source)
	}
	if w.PollInterval < time.Second {
		return keyError("watch.poll_interval", "must be at least 1s")
	}
	if w.CatchUpRate <= 0 {
		return keyError("watch.catchup_rate", "must be more than 0 (accounts per second)")
	}
	if w.CatchUpInterval != 0 && w.CatchUpInterval < time.Minute {
		return keyError("watch.catchup_interval", `%v is too short: at least "1m", or "0s" for never (default "6h")`, w.CatchUpInterval)
	}
	if w.MaxConcurrentLogins < 1 {
		return keyError("watch.max_concurrent_logins", "must be at least 1")
	}
	if w.ChangeDelay < MinChangeDelay {
		return keyError("watch.change_delay", `%v is too short: at least "1s" (default "30s")`, w.ChangeDelay)
	}
	if w.ChangeInterval < 0 || w.ChangeInterval > 24*time.Hour {
		return keyError("watch.change_interval", `%v is out of range: "0s" (no guard) to "24h" (default "2m")`, w.ChangeInterval)
	}
	if w.ChangeDelay > MaxChangeDelay {
		return keyError("watch.change_delay", `%v is too long: at most "1h" (default "30s") — phones would show flags changed elsewhere that late`, w.ChangeDelay)
	}
	return nil
}

// validateMaster checks the master user settings and reads the password
// file.
func (w *Watch) validateMaster() error {
	if w.SecretKeyFile != "" {
		return keyError("watch.secret_key_file", `only used with auth = "captured" — remove it, or set auth = "captured"`)
	}
	if w.MasterUser == "" {
		return keyError("watch.master_user", `required with auth = "master" — the name of the Dovecot master user`)
	}
	switch {
	case w.MasterPassword != "" && w.MasterPasswordFile != "":
		return keyError("watch.master_password", "set master_password or master_password_file, not both")
	case w.MasterPasswordFile != "":
		data, err := ReadSecretFile("watch.master_password_file", w.MasterPasswordFile)
		if err != nil {
			return err
		}
		w.MasterPassword = strings.TrimRight(string(data), "\r\n")
		if w.MasterPassword == "" {
			return &Error{Key: "watch.master_password_file", Value: w.MasterPasswordFile, Err: errors.New("file is empty"),
				Fix: "write the master user's password in it, on one line"}
		}
	case w.MasterPassword == "":
		return keyError("watch.master_password", `required with auth = "master" — set it or master_password_file`)
	}
	return nil
}

// validateCaptured refuses master user settings, which captured mode never
// uses: watchers log in with each user's own password. The key file itself
// is read (or created) when serve starts; Parse has set its default.
func (w *Watch) validateCaptured() error {
	for _, k := range []struct{ key, value string }{
		{"watch.master_user", w.MasterUser},
		{"watch.master_password", w.MasterPassword},
		{"watch.master_password_file", w.MasterPasswordFile},
	} {
		if k.value != "" {
			return keyError(k.key, `only used with auth = "master" — remove it: with auth = "captured" watchers log in with each user's own password`)
		}
	}
	if w.ChangeDelay < MinChangeDelay {
		return keyError("watch.change_delay", `%v is too short: at least "1s" (default "30s")`, w.ChangeDelay)
	}
	if w.ChangeDelay > MaxChangeDelay {
		return keyError("watch.change_delay", `%v is too long: at most "1h" (default "30s") — phones would show flags changed elsewhere that late`, w.ChangeDelay)
	}
	return nil
}

func (a *APNS) validate() error {
	switch a.Priority {
	case 0, 5, 10:
	default:
		return keyError("apns.priority", "%d is not one of 0 (no header, the default), 5 or 10", a.Priority)
	}
	if a.Concurrency < 1 || a.Concurrency > MaxAPNsConcurrency {
		return keyError("apns.concurrency", "%d is out of range: 1 to %d pushes in flight (default %d)", a.Concurrency, MaxAPNsConcurrency, DefaultAPNsConcurrency)
	}
	if a.Connections < 1 || a.Connections > MaxAPNsConnections {
		return keyError("apns.connections", "%d is out of range: 1 to %d connections to APNs (default %d)", a.Connections, MaxAPNsConnections, DefaultAPNsConnections)
	}
	switch {
	case a.CertificateFile != "" && a.TokenKeyFile != "":
		return keyError("apns.certificate_file", "set certificate_file or token_key_file, not both")
	case a.CertificateFile != "":
		if a.KeyID != "" || a.TeamID != "" {
			return keyError("apns.key_id", "key_id and team_id go with token_key_file")
		}
	case a.TokenKeyFile != "":
		if a.KeyID == "" {
			return keyError("apns.key_id", "required with token_key_file")
		}
		if a.TeamID == "" {
			return keyError("apns.team_id", "required with token_key_file")
		}
		if a.Topic == "" {
			return keyError("apns.topic", "required with token_key_file (a token key carries no topic)")
		}
	default:
		return keyError("apns.certificate_file", "required — name the APNs certificate Apple issued (or set token_key_file with key_id, team_id and topic)")
	}
	switch a.Endpoint {
	case EndpointProduction, EndpointDevelopment:
	default:
		u, err := url.Parse(a.Endpoint)
		if err != nil || u.Scheme != "https" || u.Host == "" {
			return keyError("apns.endpoint", "%q is not production, development or an https:// URL", a.Endpoint)
		}
	}
	return nil
}

func (c *Config) validateRest() error {
	if err := c.Store.validate(); err != nil {
		return err
	}
	return c.Admin.validate()
}

// EndpointURL is the base URL pushes are sent to.
func (a *APNS) EndpointURL() string {
	switch a.Endpoint {
	case EndpointProduction:
		return "https://api.push.apple.com"
	case EndpointDevelopment:
		return "https://api.sandbox.push.apple.com"
	}
	return strings.TrimRight(a.Endpoint, "/")
}
