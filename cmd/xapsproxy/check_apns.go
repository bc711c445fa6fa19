package main

// The APNs checks: the credentials, then a TLS handshake with the
// endpoint, as the pusher's connections make it.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"syscall"
	"time"

	"github.com/xapsproxy/xapsproxy/config"
	"github.com/xapsproxy/xapsproxy/push"
)

// apnsHandshakeTimeout bounds the connection to APNs and its handshake.
const apnsHandshakeTimeout = 10 * time.Second

// checkAPNs loads the APNs credentials and shakes hands with the endpoint.
func (c *checker) checkAPNs(ctx context.Context) {
	creds, err := push.LoadCredentials(c.cfg.APNS, c.now)
	if err != nil {
		c.r.fail(err)
	} else {
		c.r.ok("apns credentials: %s", creds.Describe())
		if left := creds.NotAfter.Sub(c.now); creds.Certificate != nil && left < expiryWarning {
			c.r.warn("apns.certificate_file %s: the APNs certificate expires %s (%s): renew it at https://identity.apple.com (Push Certificates), then restart serve",
				creds.File, days(left), creds.NotAfter.UTC().Format("2006-01-02"))
		}
	}
	endpoint := c.cfg.APNS.EndpointURL()
	tc := &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: []string{"h2"}}
	client := "no client certificate (token authentication)"
	switch {
	case creds != nil:
		tc.RootCAs = creds.RootCAs
		if creds.Certificate != nil {
			tc.Certificates = []tls.Certificate{*creds.Certificate}
			client = "client certificate presented"
		}
	case c.cfg.APNS.CAFile != "":
		pool, err := config.CertPool("apns.ca_file", c.cfg.APNS.CAFile)
		if err != nil {
			c.r.note("apns.endpoint %s: not tried: apns.ca_file cannot be read", endpoint)
			return
		}
		tc.RootCAs = pool
		client = "no client certificate (the credentials failed)"
	default:
		client = "no client certificate (the credentials failed)"
	}
	u, err := url.Parse(endpoint)
	if err != nil { // validated by config
		c.r.fail(&config.Error{Key: "apns.endpoint", Value: endpoint, Err: err, Fix: `use "production", "development" or an https:// URL`})
		return
	}
	port := u.Port()
	if port == "" {
		port = "443"
	}
	addr := net.JoinHostPort(u.Hostname(), port)
	tc.ServerName = u.Hostname()
	hctx, cancel := context.WithTimeout(ctx, apnsHandshakeTimeout)
	defer cancel()
	d := tls.Dialer{Config: tc}
	conn, err := d.DialContext(hctx, "tcp", addr)
	if err != nil {
		c.r.fail(&config.Error{Key: "apns.endpoint", Value: endpoint, Err: fmt.Errorf("TLS handshake with %s: %w", addr, err), Fix: apnsFix(err, addr)})
		return
	}
	defer conn.Close()
	state := conn.(*tls.Conn).ConnectionState()
	if state.NegotiatedProtocol != "h2" {
		c.r.fail(&config.Error{Key: "apns.endpoint", Value: endpoint, Err: fmt.Errorf("%s does not speak HTTP/2 (ALPN h2), as APNs does", addr),
			Fix: `it is not an APNs endpoint: use "production", "development" or the URL of an APNs`})
		return
	}
	c.r.ok("apns.endpoint %s: TLS handshake ok (%s, HTTP/2), %s", endpoint, tls.VersionName(state.Version), client)
}

// apnsFix says what to do about a failed connection to APNs at addr.
func apnsFix(err error, addr string) string {
	var unknown x509.UnknownAuthorityError
	var invalid x509.CertificateInvalidError
	var hostname x509.HostnameError
	var verify *tls.CertificateVerificationError
	var dnsErr *net.DNSError
	var netErr net.Error
	switch {
	case errors.As(err, &unknown) || errors.As(err, &invalid) || errors.As(err, &hostname) || errors.As(err, &verify):
		return "the endpoint's certificate is not trusted: for Apple's endpoints leave apns.ca_file unset and keep the system's CA certificates installed (ca-certificates); " +
			"for another endpoint set apns.ca_file to the CA that signed its certificate"
	case errors.Is(err, context.DeadlineExceeded) || errors.As(err, &netErr) && netErr.Timeout():
		return fmt.Sprintf("no answer within %v: let this machine connect out to %s (firewall, outbound proxy)", apnsHandshakeTimeout, addr)
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Sprintf("nothing listens at %s: check apns.endpoint (\"production\", \"development\" or the URL of an APNs) and outbound access to it", addr)
	case errors.As(err, &dnsErr):
		return "the name does not resolve: check apns.endpoint and this machine's DNS"
	}
	return fmt.Sprintf("check apns.endpoint and that this machine may connect out to %s", addr)
}
