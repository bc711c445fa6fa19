package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-imap/v2/imapserver/imapmemserver"
)

// demoBackend is the demo's stand-in for Dovecot: go-imap's in-memory server
// with one user, and a master user that logs in as anyone the way Dovecot's
// "user*master" does.
type demoBackend struct {
	srv *imapserver.Server
	ln  net.Listener
}

func startDemoBackend() (*demoBackend, error) {
	user := imapmemserver.NewUser(demoUser, demoPassword)
	if err := user.Create("INBOX", nil); err != nil {
		return nil, fmt.Errorf("demo backend: %w", err)
	}
	srv := imapserver.New(&imapserver.Options{
		NewSession: func(*imapserver.Conn) (imapserver.Session, *imapserver.GreetingData, error) {
			return &demoSession{user: user}, nil, nil
		},
		Caps:         imap.CapSet{imap.CapIMAP4rev1: {}, imap.CapIdle: {}, imap.CapLiteralPlus: {}, imap.CapUIDPlus: {}},
		InsecureAuth: true, // loopback only
		Logger:       discardLogger{},
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("demo backend: %w", err)
	}
	go srv.Serve(ln)
	return &demoBackend{srv: srv, ln: ln}, nil
}

func (b *demoBackend) Addr() string { return b.ln.Addr().String() }
func (b *demoBackend) Close() error { return b.srv.Close() }

// demoSession accepts the user's password, or "alice*master" with the
// master password.
type demoSession struct {
	*imapmemserver.UserSession // nil until logged in
	user                       *imapmemserver.User
}

func (s *demoSession) Login(username, password string) error {
	name, master, isMaster := strings.Cut(username, "*")
	if name != demoUser {
		return imapserver.ErrAuthFailed
	}
	if isMaster {
		if master != demoMaster || password != demoMasterPW {
			return imapserver.ErrAuthFailed
		}
		password = demoPassword
	}
	if err := s.user.Login(name, password); err != nil {
		return err
	}
	s.UserSession = imapmemserver.NewUserSession(s.user)
	return nil
}

type discardLogger struct{}

func (discardLogger) Printf(string, ...any) {}

// writeDemoCert writes a fresh self-signed certificate for localhost and
// 127.0.0.1 to dir/cert.pem and dir/key.pem, and returns the certificate.
func writeDemoCert(dir string) ([]byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "xapsproxy demo"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := os.WriteFile(filepath.Join(dir, "cert.pem"), certPEM, 0o600); err != nil {
		return nil, err
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	if err := os.WriteFile(filepath.Join(dir, "key.pem"), keyPEM, 0o600); err != nil {
		return nil, err
	}
	return certPEM, nil
}

func certPool(certPEM []byte) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(certPEM) {
		return nil, errors.New("demo: bad certificate")
	}
	return pool, nil
}

// storyHandler prints log records as plain indented text: the demo shows the
// APNs request the log sender describes.
type storyHandler struct{ w io.Writer }

func newStoryLogger(w io.Writer) *slog.Logger { return slog.New(storyHandler{w}) }

func (h storyHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h storyHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h storyHandler) WithGroup(string) slog.Handler            { return h }

func (h storyHandler) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	fmt.Fprintf(&b, "   The push (%s):\n", r.Message)
	var attr func(a slog.Attr)
	attr = func(a slog.Attr) {
		if a.Value.Kind() == slog.KindGroup {
			for _, g := range a.Value.Group() {
				attr(g)
			}
			return
		}
		fmt.Fprintf(&b, "      %s: %s\n", a.Key, a.Value.String())
	}
	r.Attrs(func(a slog.Attr) bool { attr(a); return true })
	_, err := io.WriteString(h.w, b.String())
	return err
}
