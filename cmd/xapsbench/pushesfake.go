package main

import (
	"bufio"
	"crypto/sha256"
	"crypto/tls"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// fakeAPNsCommand is the hidden subcommand that runs the fake APNs of
// `xapsbench pushes` in a process of its own, so that the push stage's CPU
// and memory are measured alone.
const fakeAPNsCommand = "pushes-apns"

// The devices of `xapsbench pushes`: device i (0-based) is user u%06d with
// its own account id and token; the token's first 8 hex digits are i, so
// that the fake APNs finds a device without a map.
func pushesUser(i int) string { return fmt.Sprintf("u%06d", i) }

func pushesAccountID(i int) string { return fmt.Sprintf("%08X-B5E1-4C3A-9D2F-%012X", i, i) }

func pushesToken(i int) string {
	sum := sha256.Sum256(binary.BigEndian.AppendUint32([]byte("xapsbench pushes "), uint32(i)))
	binary.BigEndian.PutUint32(sum[:4], uint32(i))
	return hex.EncodeToString(sum[:])
}

// pushesBody is exactly the body a Mail push about INBOX carries for
// device i, written out here rather than taken from package push.
func pushesBody(i int) []byte {
	return []byte(`{"aps":{"account-id":"` + pushesAccountID(i) + `","m":["` + pushMailboxHash + `"]}}`)
}

// fakeRecordSize is the wire size of one fakeRecord in the answer to
// "records": first and lastOK as int64, ok as int32, little endian.
const fakeRecordSize = 20

// fakeRecord is what the fake APNs saw of one device since the last reset.
type fakeRecord struct {
	first  int64 // unix nanos of the first request's arrival; 0 = none
	lastOK int64 // unix nanos of the latest 200 answer; 0 = none
	ok     int32 // requests answered 200
}

// fakeSummary is the answer to "summary" and "mode": totals since the
// last reset.
type fakeSummary struct {
	At        int64 // unix nanos when taken (for "mode": when the mode changed)
	Requests  int64 // requests received
	OK        int64 // answered 200
	Failed    int64 // answered 500
	Cancelled int64 // given up by the client before the answer
	Unknown   int64 // not for a device of the run (answered 400 BadDeviceToken)
	Malformed int64 // for a device, but not the push xapsproxy must send
	DevicesOK int64 // devices with at least one 200
	LastOK    int64 // unix nanos of the latest 200
	Conns     int64 // connections accepted since the process started
	Closed    int64 // of those, closed
	Problems  []string
	Log       string // the HTTP server's own log (TLS handshake errors and the like)
}

// fakeDevices is the run's devices as the fake knows them.
type fakeDevices struct {
	tokens []string
	bodies [][]byte
	recs   []fakeRec
}

type fakeRec struct {
	first, lastOK atomic.Int64
	ok            atomic.Int32
}

// fakeServer is the fake APNs: it answers POST /3/device/<token> with 200
// and an apns-id after the delay (or 500 InternalServerError in failing
// mode) and records per device when requests came and how many got a 200.
type fakeServer struct {
	devs    atomic.Pointer[fakeDevices]
	delay   atomic.Int64 // time.Duration
	failing atomic.Bool
	ids     atomic.Uint64
	conns   atomic.Int64
	closed  atomic.Int64
	log     *tailBuffer

	requests, ok, failed, cancelled, unknown, malformed, devicesOK, lastOK atomic.Int64

	mu       sync.Mutex
	problems []string // the first few
}

var (
	internalErrorBody = []byte(`{"reason":"InternalServerError"}`)
	badTokenBody      = []byte(`{"reason":"BadDeviceToken"}`)
	bodyBuffers       = sync.Pool{New: func() any { b := make([]byte, 512); return &b }}
)

func (s *fakeServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	at := time.Now().UnixNano()
	s.requests.Add(1)
	d := s.devs.Load()
	i, known := d.index(r.URL.Path)
	if !known {
		s.unknown.Add(1)
		s.problem(fmt.Sprintf("%s %s: not a device of the run", r.Method, r.URL.Path))
		w.WriteHeader(http.StatusBadRequest)
		w.Write(badTokenBody)
		return
	}
	rec := &d.recs[i]
	rec.first.CompareAndSwap(0, at)
	buf := bodyBuffers.Get().(*[]byte)
	n, err := io.ReadFull(r.Body, *buf)
	if bad := checkBenchPush(r, (*buf)[:n], err, d.bodies[i]); bad != "" {
		s.malformed.Add(1)
		s.problem(fmt.Sprintf("device %d: %s", i, bad))
	}
	bodyBuffers.Put(buf)
	if delay := time.Duration(s.delay.Load()); delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			s.cancelled.Add(1)
			return
		}
	}
	if s.failing.Load() {
		s.failed.Add(1)
		w.WriteHeader(http.StatusInternalServerError)
		w.Write(internalErrorBody)
		return
	}
	w.Header()["Apns-Id"] = []string{s.newID()}
	w.WriteHeader(http.StatusOK)
	now := time.Now().UnixNano()
	rec.lastOK.Store(now)
	if rec.ok.Add(1) == 1 {
		s.devicesOK.Add(1)
	}
	s.ok.Add(1)
	for last := s.lastOK.Load(); now > last && !s.lastOK.CompareAndSwap(last, now); last = s.lastOK.Load() {
	}
}

// index finds the device a request path is for.
func (d *fakeDevices) index(path string) (int, bool) {
	tok, ok := strings.CutPrefix(path, "/3/device/")
	if !ok || len(tok) != 64 {
		return 0, false
	}
	i, err := strconv.ParseUint(tok[:8], 16, 32)
	if err != nil || i >= uint64(len(d.tokens)) || d.tokens[i] != tok {
		return 0, false
	}
	return int(i), true
}

// checkBenchPush says how r (body, read with readErr) differs from the
// Mail push xapsproxy must send: POST over HTTP/2, apns-topic the
// certificate's, apns-push-type background, an expiration, and exactly
// want as the body. "" = no difference.
func checkBenchPush(r *http.Request, body []byte, readErr error, want []byte) string {
	switch {
	case r.Method != http.MethodPost:
		return "method " + r.Method
	case r.ProtoMajor != 2:
		return "protocol " + r.Proto
	case r.Header.Get("apns-topic") != apnsTopic:
		return fmt.Sprintf("apns-topic %q, want %q", r.Header.Get("apns-topic"), apnsTopic)
	case r.Header.Get("apns-push-type") != "background":
		return fmt.Sprintf("apns-push-type %q, want background", r.Header.Get("apns-push-type"))
	case r.Header.Get("apns-expiration") == "":
		return "no apns-expiration"
	case readErr != nil && !errors.Is(readErr, io.ErrUnexpectedEOF) && !errors.Is(readErr, io.EOF):
		return fmt.Sprintf("reading the body: %v", readErr)
	case string(body) != string(want):
		return fmt.Sprintf("body %q, want %q", body, want)
	}
	return ""
}

func (s *fakeServer) problem(p string) {
	s.mu.Lock()
	if len(s.problems) < 10 {
		s.problems = append(s.problems, p)
	}
	s.mu.Unlock()
}

// newID is an apns-id: UUID-shaped, from a counter (cheaper than random).
func (s *fakeServer) newID() string {
	var b [36]byte
	copy(b[:], "00000000-0000-4000-8000-")
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], s.ids.Add(1))
	hex.Encode(b[24:], n[2:])
	return string(b[:])
}

func (s *fakeServer) setDevices(n int) {
	d := &fakeDevices{tokens: make([]string, n), bodies: make([][]byte, n), recs: make([]fakeRec, n)}
	for i := range n {
		d.tokens[i], d.bodies[i] = pushesToken(i), pushesBody(i)
	}
	s.devs.Store(d)
}

func (s *fakeServer) reset() {
	d := s.devs.Load()
	for i := range d.recs {
		d.recs[i].first.Store(0)
		d.recs[i].lastOK.Store(0)
		d.recs[i].ok.Store(0)
	}
	for _, c := range []*atomic.Int64{&s.requests, &s.ok, &s.failed, &s.cancelled, &s.unknown, &s.malformed, &s.devicesOK, &s.lastOK} {
		c.Store(0)
	}
	s.mu.Lock()
	s.problems = nil
	s.mu.Unlock()
}

func (s *fakeServer) summary() fakeSummary {
	s.mu.Lock()
	problems := append([]string(nil), s.problems...)
	s.mu.Unlock()
	return fakeSummary{At: time.Now().UnixNano(), Requests: s.requests.Load(), OK: s.ok.Load(), Failed: s.failed.Load(),
		Cancelled: s.cancelled.Load(), Unknown: s.unknown.Load(), Malformed: s.malformed.Load(),
		DevicesOK: s.devicesOK.Load(), LastOK: s.lastOK.Load(), Conns: s.conns.Load(), Closed: s.closed.Load(), Problems: problems, Log: s.log.String()}
}

// writeRecords writes "records N" and then N records of fakeRecordSize bytes.
func (s *fakeServer) writeRecords(w *bufio.Writer) error {
	d := s.devs.Load()
	fmt.Fprintf(w, "records %d\n", len(d.recs))
	var b [fakeRecordSize]byte
	for i := range d.recs {
		r := &d.recs[i]
		binary.LittleEndian.PutUint64(b[0:], uint64(r.first.Load()))
		binary.LittleEndian.PutUint64(b[8:], uint64(r.lastOK.Load()))
		binary.LittleEndian.PutUint32(b[16:], uint32(r.ok.Load()))
		if _, err := w.Write(b[:]); err != nil {
			return err
		}
	}
	return nil
}

// fakeAPNsCmd is the child process: it serves the fake APNs on a free
// loopback port, prints "url https://127.0.0.1:PORT", then answers
// commands on stdin, one line each, until "quit" or the end of stdin:
//
//	devices N    the run has devices 0..N-1 (records reset)      -> ok
//	delay D      answer each request after D                      -> ok
//	mode 200|500 answer 200, or 500 InternalServerError           -> summary JSON (At: the switch)
//	reset        forget the records and totals                    -> ok
//	summary      totals                                           -> summary JSON
//	records      per device: first arrival, latest 200, 200 count -> "records N" + N*20 bytes
func fakeAPNsCmd(args []string, stdin io.Reader, stdout io.Writer) error {
	fs := flag.NewFlagSet(fakeAPNsCommand, flag.ContinueOnError)
	certFile := fs.String("cert", "", "server certificate (PEM)")
	keyFile := fs.String("key", "", "server key (PEM)")
	caFile := fs.String("ca", "", "CA that issued the client certificates (PEM)")
	streams := fs.Int("streams", 1000, "HTTP/2 MAX_CONCURRENT_STREAMS per connection")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of this process to the file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
	if err != nil {
		return fmt.Errorf("fake APNs certificate: %w", err)
	}
	caPEM, err := os.ReadFile(*caFile)
	if err != nil {
		return fmt.Errorf("fake APNs CA: %w", err)
	}
	roots, err := (&pki{caPEM: caPEM}).pool()
	if err != nil {
		return err
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return fmt.Errorf("cpu profile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("cpu profile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("fake APNs: %w", err)
	}
	s := &fakeServer{log: &tailBuffer{max: 4 << 10}}
	s.setDevices(0)
	srv := &http.Server{
		Handler: s,
		TLSConfig: &tls.Config{
			MinVersion:   tls.VersionTLS12,
			Certificates: []tls.Certificate{cert},
			ClientAuth:   tls.RequireAndVerifyClientCert,
			ClientCAs:    roots,
			NextProtos:   []string{"h2"},
		},
		HTTP2:             &http.HTTP2Config{MaxConcurrentStreams: *streams},
		ErrorLog:          log.New(s.log, "", 0),
		ReadHeaderTimeout: 10 * time.Second,
		ConnState: func(_ net.Conn, st http.ConnState) {
			switch st {
			case http.StateNew:
				s.conns.Add(1)
			case http.StateClosed, http.StateHijacked:
				s.closed.Add(1)
			}
		},
	}
	go srv.ServeTLS(l, "", "")
	defer srv.Close()

	out := bufio.NewWriter(stdout)
	fmt.Fprintf(out, "url https://%s\n", l.Addr())
	if err := out.Flush(); err != nil {
		return err
	}
	enc := json.NewEncoder(out)
	sc := bufio.NewScanner(stdin)
	for sc.Scan() {
		cmd, arg, _ := strings.Cut(sc.Text(), " ")
		var err error
		switch cmd {
		case "devices":
			var n int
			if n, err = strconv.Atoi(arg); err == nil && n < 0 {
				err = fmt.Errorf("devices %d", n)
			}
			if err == nil {
				s.setDevices(n)
				_, err = io.WriteString(out, "ok\n")
			}
		case "delay":
			var d time.Duration
			if d, err = time.ParseDuration(arg); err == nil {
				s.delay.Store(int64(d))
				_, err = io.WriteString(out, "ok\n")
			}
		case "mode":
			switch arg {
			case "200", "500":
				s.failing.Store(arg == "500")
				err = enc.Encode(s.summary())
			default:
				err = fmt.Errorf("mode %q: want 200 or 500", arg)
			}
		case "reset":
			s.reset()
			_, err = io.WriteString(out, "ok\n")
		case "summary":
			err = enc.Encode(s.summary())
		case "records":
			err = s.writeRecords(out)
		case "quit":
			return out.Flush()
		default:
			err = fmt.Errorf("unknown command %q", sc.Text())
		}
		if err == nil {
			err = out.Flush()
		}
		if err != nil {
			return fmt.Errorf("%s: %w", fakeAPNsCommand, err)
		}
	}
	return sc.Err()
}
