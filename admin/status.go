package admin

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/xapsproxy/xapsproxy/push"
	"github.com/xapsproxy/xapsproxy/store"
)

const (
	// indexUsers is how many accounts /status lists.
	indexUsers = 100
	// maxUserLen bounds the user names looked up.
	maxUserLen = 512
	// statusTimeout bounds the store reads of one page; testPushTimeout a
	// test push to every device of a user.
	statusTimeout   = 10 * time.Second
	testPushTimeout = time.Minute
)

// status serves /status, /status.json and the test push.
type status struct {
	o       Options
	csrfKey []byte // per process: forms from before a restart are refused
	origin  *http.CrossOriginProtection
	log     *slog.Logger
}

func addStatus(mux *http.ServeMux, o Options) {
	s := &status{o: o, csrfKey: make([]byte, 32), origin: http.NewCrossOriginProtection(), log: o.Logger}
	rand.Read(s.csrfKey) // never fails (crypto/rand)
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	mux.HandleFunc("GET /status", s.page)
	mux.HandleFunc("GET /status.json", s.json)
	mux.HandleFunc("POST /status/test-push", s.testPush)
}

func (s *status) canonical(user string) string {
	if s.o.CanonicalUser != nil {
		return s.o.CanonicalUser(user)
	}
	return user
}

// report collects the report on user, with the running watch manager and
// pusher.
func (s *status) report(ctx context.Context, user string) (Report, error) {
	return Collect(ctx, s.o.Store, s.o.Accounts, s.o.PushStatus, user, s.o.Topic, time.Now())
}

// userParam is the ?user= of r, canonical; ok is false (and an answer
// written) when it is too long.
func (s *status) userParam(w http.ResponseWriter, v string) (string, bool) {
	if len(v) > maxUserLen {
		http.Error(w, "user name too long", http.StatusBadRequest)
		return "", false
	}
	return s.canonical(v), true
}

func (s *status) json(w http.ResponseWriter, r *http.Request) {
	securityHeaders(w)
	user, ok := s.userParam(w, r.URL.Query().Get("user"))
	if !ok {
		return
	}
	if user == "" {
		http.Error(w, "?user= is required", http.StatusBadRequest)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), statusTimeout)
	defer cancel()
	rep, err := s.report(ctx, user)
	if err != nil {
		s.fail(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(rep)
}

func (s *status) page(w http.ResponseWriter, r *http.Request) {
	securityHeaders(w)
	user, ok := s.userParam(w, r.URL.Query().Get("user"))
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), statusTimeout)
	defer cancel()
	if user == "" {
		s.index(ctx, w)
		return
	}
	rep, err := s.report(ctx, user)
	if err != nil {
		s.fail(w, err)
		return
	}
	s.render(w, pageData{Report: &rep, CSRF: s.csrf(rep.User), CanTest: s.o.PushStatus != nil})
}

func (s *status) index(ctx context.Context, w http.ResponseWriter) {
	users, err := s.o.Store.Users(ctx)
	if err != nil {
		s.fail(w, err)
		return
	}
	d := pageData{Total: len(users)}
	if len(users) > indexUsers {
		users = users[:indexUsers]
	}
	regs, err := s.o.Store.RegistrationsOf(ctx, users)
	if err != nil {
		s.fail(w, err)
		return
	}
	for _, u := range users {
		d.Accounts = append(d.Accounts, accountRow{User: u, Devices: len(regs[u])})
	}
	s.render(w, d)
}

// testPush sends a push to every device of the form's user, now, and shows
// the page with Apple's answers. It takes only a POST from this page:
// same origin, with the form's CSRF token.
func (s *status) testPush(w http.ResponseWriter, r *http.Request) {
	securityHeaders(w)
	if err := s.origin.Check(r); err != nil {
		http.Error(w, "cross-origin request refused", http.StatusForbidden)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad form", http.StatusBadRequest)
		return
	}
	user := r.PostForm.Get("user")
	if len(user) > maxUserLen || !hmac.Equal([]byte(r.PostForm.Get("csrf")), []byte(s.csrf(user))) {
		http.Error(w, "the form is stale or not from this page: reload the status page and try again", http.StatusForbidden)
		return
	}
	if s.o.PushStatus == nil {
		http.Error(w, "no pusher to send with", http.StatusServiceUnavailable)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), testPushTimeout)
	defer cancel()
	results, err := s.o.PushStatus.TestPush(ctx, user)
	if err != nil {
		s.fail(w, err)
		return
	}
	s.log.Info("test push from the status page", "user", user, "devices", len(results))
	rep, err := s.report(ctx, user)
	if err != nil {
		s.fail(w, err)
		return
	}
	d := pageData{Report: &rep, CSRF: s.csrf(user), CanTest: true, Tested: true}
	for _, res := range results {
		d.Results = append(d.Results, testResult{Token: store.ShortToken(res.DeviceToken), AccountID: res.AccountID,
			Outcome: res.Outcome(), Action: res.Action.String(), APNsID: res.Response.APNsID, OK: res.Action == push.Delivered})
	}
	s.render(w, d)
}

// csrf is the form token for a test push to user: an HMAC under the
// process's key.
func (s *status) csrf(user string) string {
	m := hmac.New(sha256.New, s.csrfKey)
	m.Write([]byte("test-push\x00" + user))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func (s *status) render(w http.ResponseWriter, d pageData) {
	var buf bytes.Buffer
	if err := pageTemplate.Execute(&buf, d); err != nil {
		s.fail(w, fmt.Errorf("render: %w", err))
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Write(buf.Bytes())
}

func (s *status) fail(w http.ResponseWriter, err error) {
	s.log.Error("status page", "err", err)
	http.Error(w, "status: "+err.Error(), http.StatusInternalServerError)
}
