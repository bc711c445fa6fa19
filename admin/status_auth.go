package admin

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// cookieName is the cookie /status?token= sets; sessionFor is how long it
// lasts. Browsers send a cookie to every port of the host it came from, so
// it must not be a key for good.
const (
	cookieName = "xapsproxy_admin"
	sessionFor = 12 * time.Hour
)

// protect requires the token of every request but /healthz and /readyz
// (probes that tell nothing): "Authorization: Bearer TOKEN", or the cookie
// that GET /status?token=TOKEN sets before it redirects to the same page
// without the token in the address. The cookie holds its expiry and an
// HMAC of it under the token, not the token.
//
// With no token (the listener is on loopback), it asks for nothing but a
// loopback name in the Host header: a web page whose name an attacker
// points at 127.0.0.1 (DNS rebinding) would otherwise be same-origin with
// the status page, read it and press its button.
func protect(next http.Handler, token string, now func() time.Time) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/healthz", "/readyz":
			next.ServeHTTP(w, r)
			return
		}
		if token == "" {
			if !loopbackHost(r.Host) {
				securityHeaders(w)
				http.Error(w, "without admin.token, the admin listener answers only to a loopback address or localhost", http.StatusMisdirectedRequest)
				return
			}
			next.ServeHTTP(w, r)
			return
		}
		if q := r.URL.Query(); r.Method == http.MethodGet && r.URL.Path == "/status" && q.Has("token") {
			securityHeaders(w)
			if !sameSecret(q.Get("token"), token) {
				unauthorized(w)
				return
			}
			http.SetCookie(w, &http.Cookie{Name: cookieName, Value: cookieValue(token, now().Add(sessionFor)), Path: "/",
				MaxAge: int(sessionFor.Seconds()), HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
			q.Del("token")
			to := "/status"
			if len(q) > 0 {
				to += "?" + q.Encode()
			}
			http.Redirect(w, r, to, http.StatusSeeOther)
			return
		}
		if authorized(r, token, now()) {
			next.ServeHTTP(w, r)
			return
		}
		securityHeaders(w)
		unauthorized(w)
	})
}

func authorized(r *http.Request, token string, now time.Time) bool {
	if auth := r.Header.Get("Authorization"); auth != "" {
		scheme, cred, ok := strings.Cut(auth, " ")
		return ok && strings.EqualFold(scheme, "Bearer") && sameSecret(strings.TrimSpace(cred), token)
	}
	c, err := r.Cookie(cookieName)
	return err == nil && validSession(c.Value, token, now)
}

func unauthorized(w http.ResponseWriter) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="xapsproxy admin"`)
	http.Error(w, "unauthorized: send Authorization: Bearer with admin.token, or open /status?token=TOKEN once in the browser", http.StatusUnauthorized)
}

// sameSecret compares in constant time, whatever the lengths.
func sameSecret(got, want string) bool {
	g, w := sha256.Sum256([]byte(got)), sha256.Sum256([]byte(want))
	return subtle.ConstantTimeCompare(g[:], w[:]) == 1
}

// cookieValue is the session cookie for token that expires at expires:
// "UNIX.HMAC".
func cookieValue(token string, expires time.Time) string {
	unix := strconv.FormatInt(expires.Unix(), 10)
	return unix + "." + sessionMAC(token, unix)
}

func sessionMAC(token, unix string) string {
	m := hmac.New(sha256.New, []byte(token))
	m.Write([]byte("xapsproxy admin session\x00" + unix))
	return hex.EncodeToString(m.Sum(nil))
}

// validSession reports whether v is a cookie made by cookieValue for token
// that has not expired at now.
func validSession(v, token string, now time.Time) bool {
	unix, mac, ok := strings.Cut(v, ".")
	if !ok || !sameSecret(mac, sessionMAC(token, unix)) {
		return false
	}
	expires, err := strconv.ParseInt(unix, 10, 64)
	return err == nil && now.Unix() < expires
}

// securityHeaders keeps the status pages to themselves: no scripts, no
// frames, no resources from elsewhere, forms only to this listener, nothing
// cached, no address (which may hold ?token=) sent on.
func securityHeaders(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	h.Set("Referrer-Policy", "no-referrer")
}

// loopbackHost reports whether host (a Host header: name or address, with
// or without a port) is localhost or a loopback address.
func loopbackHost(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
