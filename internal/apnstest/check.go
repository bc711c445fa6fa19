package apnstest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/xapsproxy/xapsproxy/internal/testpki"
)

var pathRE = regexp.MustCompile(`^/3/device/([0-9a-fA-F]{64})$`)

// check reads r's body and checks r against what xapsproxy must send. It
// returns what it parsed, every violation found, and the APNs reason for the
// first one ("" when there is none).
func (s *Server) check(r *http.Request, now time.Time) (req Request, errs []string, reason string) {
	req.Received = now
	bad := func(reason, format string, args ...any) string {
		errs = append(errs, fmt.Sprintf(format, args...))
		return reason
	}

	body, err := io.ReadAll(r.Body)
	if err != nil {
		reason = bad("BadMessage", "read body: %v", err)
	}
	req.Body = body
	if r.Method != http.MethodPost {
		reason = first(reason, bad("MethodNotAllowed", "method %s, want POST", r.Method))
	}
	if r.Proto != "HTTP/2.0" {
		reason = first(reason, bad("BadMessage", "protocol %s, want HTTP/2.0", r.Proto))
	}
	if m := pathRE.FindStringSubmatch(r.URL.Path); m != nil {
		req.Token = m[1]
	} else {
		reason = first(reason, bad("BadPath", "path %q, want /3/device/<64 hex digits>", r.URL.Path))
	}
	req.Topic = r.Header.Get("apns-topic")
	if req.Topic != s.wantTopic {
		reason = first(reason, bad("BadTopic", "apns-topic %q, want %q", req.Topic, s.wantTopic))
	}
	req.PushType = r.Header.Get("apns-push-type")
	if req.PushType != "background" {
		reason = first(reason, bad("InvalidPushType", "apns-push-type %q, want background", req.PushType))
	}
	if exp, err := strconv.ParseInt(r.Header.Get("apns-expiration"), 10, 64); err != nil {
		reason = first(reason, bad("BadExpirationDate", "apns-expiration %q is not unix seconds", r.Header.Get("apns-expiration")))
	} else {
		req.Expiration = time.Unix(exp, 0)
		if d := req.Expiration.Sub(now.Add(24 * time.Hour)); d < -time.Minute || d > time.Minute {
			reason = first(reason, bad("BadExpirationDate", "apns-expiration %v is %v away from now+24h", req.Expiration, d))
		}
	}
	// No header (what the reference daemon sends; APNs assumes 10), or one
	// of the priorities the product may be configured to send.
	if v, ok := r.Header["Apns-Priority"]; ok && (len(v) != 1 || v[0] != "5" && v[0] != "10") {
		reason = first(reason, bad("BadPriority", "apns-priority %q, want none, 5 or 10", v))
	}
	if id, m, err := decodeBody(body); err != nil {
		reason = first(reason, bad("BadMessage", "body %q: %v", body, err))
	} else {
		req.AccountID, req.Mailboxes = id, m
	}
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		req.ClientSubject, req.ClientUID, req.ClientSerial = s.peer(r.TLS.PeerCertificates[0])
	}
	req.Authorization = r.Header.Get("Authorization")
	if s.token == nil {
		if req.ClientSubject == "" {
			reason = first(reason, bad("MissingProviderToken", "no client certificate presented"))
		}
	} else if err := s.token.verify(req.Authorization, now); err != nil {
		reason = first(reason, bad("InvalidProviderToken", "authorization: %v", err))
	}
	return req, errs, reason
}

// peer returns the subject of a client certificate, the UID in it and its
// serial number in hex. They are worked out once per certificate: every
// request on a connection carries the same one, and formatting a subject
// costs more than the rest of a request's checks.
func (s *Server) peer(leaf *x509.Certificate) (subject, uid, serial string) {
	if p, ok := s.peers.Load(leaf); ok {
		p := p.([3]string)
		return p[0], p[1], p[2]
	}
	subject = leaf.Subject.String()
	for _, n := range leaf.Subject.Names {
		if n.Type.Equal(testpki.OIDUserID()) {
			uid = fmt.Sprint(n.Value)
		}
	}
	serial = leaf.SerialNumber.Text(16)
	s.peers.Store(leaf, [3]string{subject, uid, serial})
	return subject, uid, serial
}

func first(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// MailboxHash is how a Mail push names a mailbox in aps.m: the MD5 of the
// name as the device registered it, in lower-case hex.
func MailboxHash(name string) string {
	sum := md5.Sum([]byte(name))
	return hex.EncodeToString(sum[:])
}

// maxMailboxes is the most entries aps.m may have (push.MaxPushMailboxes).
const maxMailboxes = 20

var md5HexRE = regexp.MustCompile(`^[0-9a-f]{32}$`)

// decodeBody decodes a body that must be exactly
// {"aps":{"account-id":"...","m":["<md5 hex>",...]}}, with "m" optional: no
// other keys at either level (keys compared exactly, not case-folded), a
// non-empty string id, m (if present) 1 to 20 distinct lower-case MD5 hex
// strings, and nothing after the object.
func decodeBody(body []byte) (id string, mailboxes []string, err error) {
	var top map[string]json.RawMessage
	if err := decodeOnly(body, &top); err != nil {
		return "", nil, err
	}
	if len(top) != 1 || top["aps"] == nil {
		return "", nil, fmt.Errorf("want exactly one key \"aps\", got %d keys", len(top))
	}
	var aps map[string]json.RawMessage
	if err := decodeOnly(top["aps"], &aps); err != nil {
		return "", nil, fmt.Errorf("aps: %w", err)
	}
	want := 1
	if aps["m"] != nil {
		want = 2
	}
	if len(aps) != want || aps["account-id"] == nil {
		return "", nil, fmt.Errorf("aps: want exactly the keys \"account-id\" and optionally \"m\", got %d keys", len(aps))
	}
	if err := decodeOnly(aps["account-id"], &id); err != nil {
		return "", nil, fmt.Errorf("account-id: %w", err)
	}
	if id == "" {
		return "", nil, fmt.Errorf("account-id is empty")
	}
	if aps["m"] == nil {
		return id, nil, nil
	}
	if err := decodeOnly(aps["m"], &mailboxes); err != nil {
		return "", nil, fmt.Errorf("m: %w", err)
	}
	if len(mailboxes) == 0 || len(mailboxes) > maxMailboxes {
		return "", nil, fmt.Errorf("m has %d entries, want 1 to %d", len(mailboxes), maxMailboxes)
	}
	seen := map[string]bool{}
	for _, h := range mailboxes {
		if !md5HexRE.MatchString(h) {
			return "", nil, fmt.Errorf("m entry %q is not an MD5 in lower-case hex", h)
		}
		if seen[h] {
			return "", nil, fmt.Errorf("m names %s twice", h)
		}
		seen[h] = true
	}
	return id, mailboxes, nil
}

func decodeOnly(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("data after the JSON value")
	}
	return nil
}

// tokenCheck verifies provider tokens as APNs does.
type tokenCheck struct {
	key    *ecdsa.PublicKey
	keyID  string
	teamID string

	// verified holds the issue time of each token whose signature has
	// checked out: a client reuses one token for many pushes, and an ECDSA
	// verification per request would cost more than the rest of the fake.
	mu       sync.Mutex
	verified map[string]time.Time
}

func newTokenCheck(key *ecdsa.PublicKey, keyID, teamID string) *tokenCheck {
	return &tokenCheck{key: key, keyID: keyID, teamID: teamID, verified: map[string]time.Time{}}
}

// verify checks an ES256 provider token as APNs does: its signature once,
// its issue time (within the last hour) on every use.
func (tc *tokenCheck) verify(auth string, now time.Time) error {
	tc.mu.Lock()
	iat, ok := tc.verified[auth]
	tc.mu.Unlock()
	if !ok {
		var err error
		if iat, err = tc.verifySignature(auth); err != nil {
			return err
		}
		tc.mu.Lock()
		tc.verified[auth] = iat
		tc.mu.Unlock()
	}
	if iat.After(now.Add(time.Minute)) || iat.Before(now.Add(-time.Hour)) {
		return fmt.Errorf("iat %v is not within the last hour", iat)
	}
	return nil
}

// verifySignature checks the form, key id, team id and signature of a
// token and returns its issue time.
func (tc *tokenCheck) verifySignature(auth string) (time.Time, error) {
	jwt, ok := strings.CutPrefix(auth, "bearer ")
	if !ok {
		return time.Time{}, fmt.Errorf("%q is not \"bearer <token>\"", auth)
	}
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		return time.Time{}, fmt.Errorf("token has %d parts, want 3", len(parts))
	}
	var header struct{ Alg, Kid string }
	var claims struct {
		Iss string
		Iat int64
	}
	for i, v := range []any{&header, &claims} {
		raw, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err != nil {
			return time.Time{}, fmt.Errorf("token part %d: %w", i, err)
		}
		if err := json.Unmarshal(raw, v); err != nil {
			return time.Time{}, fmt.Errorf("token part %d: %w", i, err)
		}
	}
	if header.Alg != "ES256" || header.Kid != tc.keyID {
		return time.Time{}, fmt.Errorf("header alg %q kid %q, want ES256 and %q", header.Alg, header.Kid, tc.keyID)
	}
	if claims.Iss != tc.teamID {
		return time.Time{}, fmt.Errorf("iss %q, want %q", claims.Iss, tc.teamID)
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil || len(sig) != 64 {
		return time.Time{}, fmt.Errorf("signature is not 64 bytes of base64url")
	}
	digest := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	r, s := new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])
	if !ecdsa.Verify(tc.key, digest[:], r, s) {
		return time.Time{}, fmt.Errorf("signature does not verify")
	}
	return time.Unix(claims.Iat, 0), nil
}

// logWriter collects the http.Server's error log (TLS handshake failures).
type logWriter struct{ s *Server }

func (w logWriter) Write(p []byte) (int, error) {
	w.s.mu.Lock()
	defer w.s.mu.Unlock()
	w.s.tlsErrs = append(w.s.tlsErrs, strings.TrimSpace(string(p)))
	return len(p), nil
}

func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return strings.ToUpper(h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:])
}
