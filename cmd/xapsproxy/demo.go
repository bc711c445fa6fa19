package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/xapsproxy/xapsproxy/config"
	"github.com/xapsproxy/xapsproxy/push"
	"github.com/xapsproxy/xapsproxy/watch"
)

// The demo's fixed cast.
const (
	demoUser       = "alice"
	demoPassword   = "alicepw"
	demoMaster     = "master"
	demoMasterPW   = "masterpw"
	demoTopic      = "com.apple.mail.XServer.00000000-0000-4000-8000-000000000000"
	demoToken      = "2918390218931890821908309283098109381029309829018310983092892829"
	demoAccountID  = "0715A26B-CA09-4730-A419-793000CA982E"
	demoStepTimout = 10 * time.Second
)

// demoCmd runs the whole product in one process: an in-memory IMAP server
// stands in for Dovecot, a log stands in for APNs, and a scripted device
// registers the way iPhone Mail does. Then a message arrives and the push that
// would wake the phone is shown.
func demoCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("demo")
	keep := fs.Bool("keep", false, "keep running after the demo, so you can connect your own client")
	debug := fs.Bool("debug", false, "log debug lines to stderr")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "xapsproxy-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	backend, err := startDemoBackend()
	if err != nil {
		return err
	}
	defer backend.Close()
	certPEM, err := writeDemoCert(dir)
	if err != nil {
		return err
	}
	cfg := &config.Config{
		Proxy:   config.Proxy{ListenTLS: "127.0.0.1:0", ListenSTARTTLS: "127.0.0.1:0", CertFile: filepath.Join(dir, "cert.pem"), KeyFile: filepath.Join(dir, "key.pem")},
		Backend: config.Backend{Address: backend.Addr(), TLS: config.BackendTLSNone},
		Watch:   config.Watch{Auth: config.AuthMaster, MasterUser: demoMaster, MasterPassword: demoMasterPW, MasterSeparator: "*", Source: config.SourceIdle, PollInterval: config.DefaultPollInterval, CatchUpRate: config.DefaultCatchUpRate},
		APNS:    config.APNS{Topic: demoTopic, Endpoint: config.EndpointProduction, MailboxHash: true},
		Store:   config.Store{Path: filepath.Join(dir, "xapsproxy.db")},
	}
	log := newLogger(stderr, *debug)
	if !*debug {
		log = newLogger(io.Discard, false)
	}
	pushed := make(chan struct{}, 1)
	sender := &demoSender{inner: push.NewLogSender(newStoryLogger(stdout), cfg.APNS), pushed: pushed}
	a, err := newApp(ctx, cfg, log, sender)
	if err != nil {
		return err
	}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan error, 1)
	go func() { done <- a.run(runCtx) }()

	say := func(format string, args ...any) { fmt.Fprintf(stdout, format+"\n", args...) }
	say("xapsproxy demo: an in-memory IMAP server plays Dovecot (%s), APNs is only logged.", backend.Addr())
	say("The proxy listens for iPhone Mail on %s (TLS) and %s (STARTTLS).\n", a.tlsLn.Addr(), a.startTLSLn.Addr())

	err = demoStory(ctx, a, certPEM, backend.Addr(), pushed, say)
	if err == nil && *keep {
		say("\nStill running: connect a client to %s (TLS, self-signed) as %s / %s; Ctrl-C stops.", a.tlsLn.Addr(), demoUser, demoPassword)
		<-ctx.Done()
	}
	stop()
	if rerr := <-done; err == nil {
		err = rerr
	}
	return err
}

func demoStory(ctx context.Context, a *app, certPEM []byte, backendAddr string, pushed <-chan struct{}, say func(string, ...any)) error {
	say("1. A device connects over TLS and logs in as %s.", demoUser)
	dev, err := dialDemoDevice(a.tlsLn.Addr().String(), certPEM)
	if err != nil {
		return err
	}
	defer dev.Close()
	caps, err := dev.command("a1 LOGIN "+demoUser+" "+demoPassword, "a1 ")
	if err != nil {
		return err
	}
	if !strings.Contains(caps, "XAPPLEPUSHSERVICE") {
		return fmt.Errorf("demo: the login reply does not advertise XAPPLEPUSHSERVICE: %q", caps)
	}
	say("   The proxy answered: %s", caps)

	say("2. The device registers for push, as iPhone Mail does after every login:")
	reg := "a2 XAPPLEPUSHSERVICE aps-version 2 aps-account-id " + demoAccountID + " aps-device-token " + demoToken + " aps-subtopic com.apple.mobilemail mailboxes (INBOX)"
	say("   %s", reg)
	reply, err := dev.command(reg, "a2 ")
	if err != nil {
		return err
	}
	say("   The proxy stored the registration and answered:\n%s", indent(reply, "   "))

	say("3. The proxy now watches %s's INBOX on the IMAP server.", demoUser)
	if err := waitFor(ctx, func() bool {
		return a.watch.Stats().Watchers[watch.StateWatching] == 1
	}); err != nil {
		return fmt.Errorf("demo: the watcher did not start: %w", err)
	}

	say("4. A message is delivered to %s's INBOX.", demoUser)
	if err := deliverDemoMessage(backendAddr); err != nil {
		return err
	}
	select {
	case <-pushed:
	case <-time.After(demoStepTimout):
		return errors.New("demo: no push within 10 seconds")
	case <-ctx.Done():
		return ctx.Err()
	}
	say("5. That push makes the phone connect and fetch the new message. Nothing about the")
	say("   message goes to Apple: only the account id and, in \"m\", the MD5 of the mailbox")
	say("   name (here INBOX). Demo complete.")
	return nil
}

// demoSender passes pushes to the log sender and signals each one.
type demoSender struct {
	inner  push.Sender
	pushed chan<- struct{}
}

func (d *demoSender) Send(ctx context.Context, n push.Notification) (push.Response, error) {
	resp, err := d.inner.Send(ctx, n)
	select {
	case d.pushed <- struct{}{}:
	default:
	}
	return resp, err
}

// demoDevice is a scripted IMAP client speaking like iPhone Mail.
type demoDevice struct {
	net.Conn
	r *bufio.Reader
}

func dialDemoDevice(addr string, certPEM []byte) (*demoDevice, error) {
	roots, err := certPool(certPEM)
	if err != nil {
		return nil, err
	}
	d := &net.Dialer{Timeout: demoStepTimout}
	conn, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{RootCAs: roots, ServerName: "localhost"})
	if err != nil {
		return nil, fmt.Errorf("demo device: %w", err)
	}
	dev := &demoDevice{Conn: conn, r: bufio.NewReader(conn)}
	if _, err := dev.readUntil("* OK"); err != nil {
		conn.Close()
		return nil, err
	}
	return dev, nil
}

// command sends one line and returns the replies up to the tagged one.
func (d *demoDevice) command(line, tag string) (string, error) {
	if _, err := io.WriteString(d, line+"\r\n"); err != nil {
		return "", fmt.Errorf("demo device: %w", err)
	}
	reply, err := d.readUntil(tag)
	if err == nil && !strings.HasPrefix(reply[strings.LastIndex(reply, "\n")+1:], tag+"OK") {
		err = fmt.Errorf("demo device: command refused: %q", reply)
	}
	return reply, err
}

func (d *demoDevice) readUntil(prefix string) (string, error) {
	d.SetReadDeadline(time.Now().Add(demoStepTimout))
	var lines []string
	for {
		line, err := d.r.ReadString('\n')
		if err != nil {
			return "", fmt.Errorf("demo device: %w", err)
		}
		lines = append(lines, strings.TrimRight(line, "\r\n"))
		if strings.HasPrefix(line, prefix) {
			return strings.Join(lines, "\n"), nil
		}
	}
}

func deliverDemoMessage(addr string) error {
	c, err := imapclient.DialInsecure(addr, nil)
	if err != nil {
		return fmt.Errorf("demo delivery: %w", err)
	}
	defer c.Close()
	if err := c.Login(demoUser, demoPassword).Wait(); err != nil {
		return fmt.Errorf("demo delivery: %w", err)
	}
	msg := "From: bob@example.com\r\nTo: alice@example.com\r\nSubject: Lunch?\r\n\r\nNoon at the usual place.\r\n"
	w := c.Append("INBOX", int64(len(msg)), nil)
	if _, err := w.Write([]byte(msg)); err != nil {
		return fmt.Errorf("demo delivery: %w", err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("demo delivery: %w", err)
	}
	if _, err := w.Wait(); err != nil {
		return fmt.Errorf("demo delivery: %w", err)
	}
	return c.Logout().Wait()
}

// waitFor polls cond until it holds or demoStepTimout passes.
func waitFor(ctx context.Context, cond func() bool) error {
	deadline := time.Now().Add(demoStepTimout)
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			return errors.New("timed out")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}

func indent(s, prefix string) string {
	return prefix + strings.ReplaceAll(s, "\n", "\n"+prefix)
}
