package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/xapsproxy/xapsproxy/config"
	"github.com/xapsproxy/xapsproxy/internal/testpki"
	"github.com/xapsproxy/xapsproxy/store"
)

// The session fuzz target: random and mutated client input through a real
// proxy (on 127.0.0.1) in front of refServer, starting in each state a
// session can be in. It asserts invariants, not only "no crash":
//
//   - the user the proxy registers a device for is the user the backend
//     logged in on that very connection;
//   - XAPPLEPUSHSERVICE, STARTTLS, COMPRESS, XCLIENT, UNAUTHENTICATE, an ID
//     with x- fields and a master-user name never reach the backend;
//   - on a listener that requires TLS, no LOGIN or AUTHENTICATE reaches the
//     backend before TLS;
//   - the session ends once the client has said everything (no hang).
//
// The seeds are real clients' transcripts (testdata/transcripts) and the
// smuggling attempts the proxy has been fixed for.

// fuzzState is where the session is when the fuzz input starts.
type fuzzState uint8

const (
	stateNotLoggedIn fuzzState = iota
	stateLoggedIn
	stateInIdle
	stateInAuthenticate
	statePlaintextListener // LOGIN must wait for STARTTLS
	numFuzzStates
)

var fuzzPrefix = [numFuzzStates]string{
	stateLoggedIn:       "p1 LOGIN alice alicepw\r\n",
	stateInIdle:         "p1 LOGIN alice alicepw\r\np2 IDLE\r\n",
	stateInAuthenticate: "p3 AUTHENTICATE PLAIN\r\n",
}

// fuzzSuffix follows every input: a registration, so that whatever the
// input did to the session, the proxy says whose session it thinks it is.
const fuzzSuffix = "\r\nzz1 NOOP\r\nzz2 XAPPLEPUSHSERVICE aps-version 1 aps-account-id A aps-device-token a66216ad1683d48b9933cdcc3b98a833ee1a968143f41ea494187da54715da66\r\n"

func FuzzSession(f *testing.F) {
	files, err := filepath.Glob(filepath.Join("testdata", "transcripts", "*.imap"))
	if err != nil || len(files) == 0 {
		f.Fatalf("no transcripts: %v", err)
	}
	var seeds [][]byte
	for _, name := range files {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		seeds = append(seeds, data)
	}
	for _, s := range []string{
		"a IDLE\r\nx LOGIN alice alicepw\r\nx LOGIN bob nopw\r\n",
		"a AUTHENTICATE PLAIN AAAA\r\nx APPEND INBOX {14}\r\nx LOGIN bob pw\r\n",
		"b IDLE\r\ni ID (\"x-originating-ip\" \"6.6.5.5\")\r\n",
		"a NOOP \"{16+}\r\nb LOGIN bob bobpw\r\nb LOGIN alice x\r\n",
		"DONE\r\nx LOGIN bob bobpw\r\n",
		"AGJvYgBib2Jwdw==\r\nx XCLIENT ADDR=1.2.3.4\r\n",
		"l LOGIN {5+}\r\nalice {7}\r\nalicepw\r\n",
		"a APPEND INBOX {5000+}\r\nx LOGIN bob bobpw\r\n",
		"a NOOP {}\r\nc AUTHENTICATE PLAIN AGFsaWNlAHdyb25n\r\nc NOOP\r\n",
		"a NOOP {0}x\r\nc AUTHENTICATE PLAIN AGFsaWNlAHdyb25n\r\nx NOOP {15+}\r\nx LOGIN alice x\r\n",
		"x APPEND INBOX {0}y {18+}\r\nq COMPRESS DEFLATE\r\n",
		"a] NOOP\r\nb NOOP\r\n",
		"x SETMETADATA \"\" (/bad \"v\" {14}\r\ny APPEND INBOX {18}\r\ny COMPRESS DEFLATE\r\n",
		"x APPEND INBOX ({5}\r\n",
		"l LOGIN ALICE alicepw\r\n",
	} {
		seeds = append(seeds, []byte(s))
	}
	for _, s := range seeds {
		for state := range numFuzzStates {
			f.Add(uint8(state), s)
		}
	}
	h := newSessionHarness(f)
	f.Fuzz(func(t *testing.T, state uint8, input []byte) {
		h.run(t, fuzzState(state%uint8(numFuzzStates)), input)
	})
}

// sessionHarness is the proxy and refServer the fuzz target runs against,
// started once per process. Inputs run one at a time.
type sessionHarness struct {
	ref                  *refServer
	lenientAddr, tlsAddr string // plaintext login allowed / refused
	mu                   sync.Mutex
	regs                 []store.Registration
}

func newSessionHarness(f *testing.F) *sessionHarness {
	ref, err := startRefServer()
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { ref.ln.Close() })
	h := &sessionHarness{ref: ref}
	ca := testpki.NewCA(f)
	cert := ca.ServerCert(f, "127.0.0.1")
	start := func(allowPlaintext bool) string {
		srv := New(Options{
			Backend:            config.Backend{Address: ref.ln.Addr().String(), TLS: config.BackendTLSNone},
			TLS:                &tls.Config{Certificates: []tls.Certificate{cert}},
			Topic:              testTopic,
			AllowPlaintextAuth: allowPlaintext,
			// The reference server, as Dovecot, leaves some literals
			// unanswered.
			ContinuationTimeout: 200 * time.Millisecond,
			MasterSeparator:     "*",
			Register: func(ctx context.Context, r store.Registration) error {
				h.mu.Lock()
				defer h.mu.Unlock()
				h.regs = append(h.regs, r)
				return nil
			},
		})
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			f.Fatal(err)
		}
		go srv.ServeSTARTTLS(ln)
		f.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			srv.Shutdown(ctx)
		})
		return ln.Addr().String()
	}
	h.lenientAddr, h.tlsAddr = start(true), start(false)
	return h
}

const fuzzSessionTimeout = 10 * time.Second

func (h *sessionHarness) run(t *testing.T, state fuzzState, input []byte) {
	h.mu.Lock()
	h.regs = nil
	h.mu.Unlock()
	addr := h.lenientAddr
	if state == statePlaintextListener {
		addr = h.tlsAddr
	}
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var rc *refConn
	select {
	case rc = <-h.ref.conns:
	case <-time.After(fuzzSessionTimeout):
		t.Fatal("the proxy did not connect to the backend")
	}
	conn.SetDeadline(time.Now().Add(fuzzSessionTimeout))
	go func() {
		msg := slices.Concat([]byte(fuzzPrefix[state]), input, []byte(fuzzSuffix))
		conn.Write(msg)
		conn.(*net.TCPConn).CloseWrite()
	}()
	if _, err := io.Copy(io.Discard, conn); err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("the session did not end within %v of the client's last byte", fuzzSessionTimeout)
		}
	}
	select {
	case <-rc.done:
	case <-time.After(fuzzSessionTimeout):
		t.Fatal("the backend connection outlived the session")
	}

	user, commands, forbidden := rc.state()
	if len(forbidden) > 0 {
		t.Fatalf("reached the backend: %q", forbidden)
	}
	if state == statePlaintextListener && (slices.Contains(commands, "LOGIN") || slices.Contains(commands, "AUTHENTICATE")) {
		t.Fatalf("a login reached the backend before TLS: %q", commands)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, r := range h.regs {
		if r.User != user || user == "" {
			t.Fatalf("the proxy registered a device for %q; the backend logged in %q", r.User, user)
		}
	}
}
