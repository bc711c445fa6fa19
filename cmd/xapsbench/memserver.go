package main

import (
	"fmt"
	"net"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-imap/v2/imapserver/imapmemserver"
)

// memBackend is go-imap's in-memory IMAP server with alice, who may have
// any number of sessions: the backend of the memory measurement, where
// Dovecot's per-user and per-process limits would make 5 000 sessions
// heavy, and where only the proxy's own memory is measured anyway.
type memBackend struct {
	srv *imapserver.Server
	ln  net.Listener
}

func startMemBackend() (*memBackend, error) {
	mem := imapmemserver.New()
	u := imapmemserver.NewUser(benchUser, benchPassword)
	if err := u.Create("INBOX", nil); err != nil {
		return nil, fmt.Errorf("memory backend: %w", err)
	}
	mem.AddUser(u)
	srv := imapserver.New(&imapserver.Options{
		NewSession: func(*imapserver.Conn) (imapserver.Session, *imapserver.GreetingData, error) {
			return mem.NewSession(), nil, nil
		},
		Caps:         imap.CapSet{imap.CapIMAP4rev1: {}, imap.CapIdle: {}, imap.CapLiteralPlus: {}},
		InsecureAuth: true, // loopback only
		Logger:       discardLogger{},
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("memory backend: %w", err)
	}
	go srv.Serve(ln)
	return &memBackend{srv: srv, ln: ln}, nil
}

func (b *memBackend) addr() string { return b.ln.Addr().String() }
func (b *memBackend) Close() error { return b.srv.Close() }

type discardLogger struct{}

func (discardLogger) Printf(string, ...any) {}
