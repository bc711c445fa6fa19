package main

// Several `xapsproxy serve` processes on one PostgreSQL and one Dovecot, as a
// provider runs them behind a TCP balancer: the harness of the
// multi-instance test and of BenchmarkCluster.

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/xapsproxy/xapsproxy/internal/dovecottest"
	"github.com/xapsproxy/xapsproxy/internal/pgtest"
	"github.com/xapsproxy/xapsproxy/store"
)

// fleet is Dovecot with n accounts, PostgreSQL, a fake APNs, and the
// configuration every instance runs with.
type fleet struct {
	t        *testing.T
	s        *stack
	url      string // the PostgreSQL database
	cfgPath  string
	accounts int
}

func fleetUser(i int) string  { return fmt.Sprintf("user%04d", i) }
func fleetToken(i int) string { return fmt.Sprintf("%064x", i+1) }

// newFleet starts Dovecot for accounts users (password "pw") and stores one
// INBOX registration for each in a new PostgreSQL database; the instances
// watch with NOTIFY.
func newFleet(t *testing.T, accounts int) *fleet {
	t.Helper()
	return newFleetWith(t, accounts, "")
}

// newFleetWith is newFleet; with eventsAddr set, Dovecot posts its own
// events there (the first instance's [events] listener), and the instances
// watch with them.
func newFleetWith(t *testing.T, accounts int, eventsAddr string) *fleet {
	t.Helper()
	users := make(map[string]string, accounts)
	for i := range accounts {
		users[fleetUser(i)] = "pw"
	}
	// Dovecot's imap serves many connections per process here (one per
	// process by default), so that a thousand watchers fit on a test
	// machine: 27 processes for 1 000 NOTIFY connections, measured.
	extra := `
default_client_limit = 5000
service imap {
  process_limit = 100
  client_limit = 50
  service_count = 0
}
`
	source, more := "notify", ""
	if eventsAddr != "" {
		source = "dovecot"
		extra += dovecottest.EventsHook(t, "http://"+eventsAddr+"/dovecot/events", eventsSecret)
		more = fmt.Sprintf("\n[events]\nlisten = %q\nsecret = %q\n", eventsAddr, eventsSecret)
	}
	s := newStackWith(t, dovecottest.Options{Users: users, ExtraConfig: extra, Exclusive: true}, more)
	if eventsAddr != "" {
		s.dovecot.InstallEventsScript(t)
	}
	f := &fleet{t: t, s: s, url: pgtest.New(t), accounts: accounts}
	doc, err := os.ReadFile(s.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Replace(string(doc), "[store]\npath = \"xapsproxy.db\"\n", fmt.Sprintf("[store]\npostgres = %q\n", f.url), 1)
	text = strings.Replace(text, "[watch]\n", "[watch]\nsource = \""+source+"\"\nmax_concurrent_logins = 16\ncatchup_rate = 1000\n", 1)
	if !strings.Contains(text, "postgres = ") || !strings.Contains(text, "source = \""+source+"\"") {
		t.Fatalf("configuration not rewritten:\n%s", text)
	}
	f.cfgPath = filepath.Join(filepath.Dir(s.cfgPath), "fleet.toml")
	if err := os.WriteFile(f.cfgPath, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := store.OpenPostgres(t.Context(), f.url)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	now := time.Now()
	for i := range accounts {
		r := store.Registration{User: fleetUser(i), DeviceToken: fleetToken(i), AccountID: fmt.Sprintf("ACCOUNT-%d", i),
			Subtopic: "com.apple.mobilemail", Mailboxes: []string{"INBOX"}, Version: 2, Topic: topic, Registered: now, Renewed: now}
		if err := st.Register(t.Context(), r); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

// config writes a copy of the instances' configuration with old replaced
// by new, for an instance that differs, and returns its path.
func (f *fleet) config(name, old, new string) string {
	f.t.Helper()
	doc, err := os.ReadFile(f.cfgPath)
	if err != nil {
		f.t.Fatal(err)
	}
	if !strings.Contains(string(doc), old) {
		f.t.Fatalf("configuration has no %q", old)
	}
	path := filepath.Join(filepath.Dir(f.cfgPath), name+".toml")
	if err := os.WriteFile(path, []byte(strings.Replace(string(doc), old, new, 1)), 0o600); err != nil {
		f.t.Fatal(err)
	}
	return path
}

// start runs n instances at once (so that they find each other before
// claiming accounts) and returns them once each is listening.
func (f *fleet) start(n int) []*serveProc {
	f.t.Helper()
	paths := make([]string, n)
	for i := range paths {
		paths[i] = f.cfgPath
	}
	return f.startConfigs(paths...)
}

// startConfigs is start with an instance per configuration file.
func (f *fleet) startConfigs(paths ...string) []*serveProc {
	f.t.Helper()
	procs := make([]*serveProc, len(paths))
	for i, path := range paths {
		procs[i] = startServeAsync(f.t, path)
	}
	for _, p := range procs {
		p.waitListening()
	}
	return procs
}

// sessions counts Dovecot's IMAP sessions per user, as `doveadm who -1`
// lists them: every watcher is one.
func (f *fleet) sessions() map[string]int {
	f.t.Helper()
	out := f.s.dovecot.Doveadm(f.t, "who", "-1")
	per := map[string]int{}
	for _, line := range strings.Split(out, "\n")[1:] {
		fields := strings.Fields(line)
		if len(fields) >= 2 && fields[1] == "imap" {
			per[fields[0]]++
		}
	}
	return per
}

// watchedOnce reports whether every account has exactly one session, and
// otherwise what is wrong.
func (f *fleet) watchedOnce() (bool, string) {
	per := f.sessions()
	var missing, doubled []string
	for i := range f.accounts {
		switch n := per[fleetUser(i)]; {
		case n == 0:
			missing = append(missing, fleetUser(i))
		case n > 1:
			doubled = append(doubled, fleetUser(i))
		}
	}
	if len(missing) == 0 && len(doubled) == 0 {
		return true, ""
	}
	return false, fmt.Sprintf("%d accounts unwatched (%s), %d watched more than once (%s)",
		len(missing), firstFew(missing), len(doubled), firstFew(doubled))
}

func firstFew(s []string) string {
	if len(s) > 5 {
		return strings.Join(s[:5], " ") + " …"
	}
	return strings.Join(s, " ")
}

// waitWatchedOnce waits until every account has exactly one session and
// returns how long that took.
func (f *fleet) waitWatchedOnce(timeout time.Duration) time.Duration {
	f.t.Helper()
	start := time.Now()
	deadline := start.Add(timeout)
	for {
		ok, why := f.watchedOnce()
		if ok {
			return time.Since(start)
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("after %v: %s", timeout, why)
		}
		time.Sleep(100 * time.Millisecond) // polling Dovecot, not synchronisation
	}
}

var ownedRE = regexp.MustCompile(`(?m)^xapsproxy_cluster_accounts_owned (\d+)$`)

// owned is the number of accounts p says it owns, from its /metrics.
func owned(t *testing.T, p *serveProc) int {
	t.Helper()
	url := "http://" + serveAddr(t, p, "admin listening", "addr") + "/metrics"
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	m := ownedRE.FindSubmatch(body)
	if m == nil {
		t.Fatalf("no xapsproxy_cluster_accounts_owned in /metrics:\n%s", body)
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}

// owners maps every account with a live lease held by one of procs to that
// instance.
func (f *fleet) owners(procs []*serveProc) map[string]*serveProc {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(f.t.Context(), 10*time.Second)
	defer cancel()
	ids, err := leaseOwners(ctx, f.url)
	if err != nil {
		f.t.Fatal(err)
	}
	byID := map[string]*serveProc{}
	for _, p := range procs {
		byID[instanceID(f.t, p)] = p
	}
	out := make(map[string]*serveProc, len(ids))
	for user, id := range ids {
		if p := byID[id]; p != nil {
			out[user] = p
		}
	}
	return out
}

// instanceID is p's cluster id, from its log.
func instanceID(t *testing.T, p *serveProc) string {
	return serveAddr(t, p, "cluster joined", "instance")
}

// deliverTo delivers one mail to each of users, several at once.
func (f *fleet) deliverTo(users []string) {
	f.t.Helper()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for _, u := range users {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			msg := "From: bob@example.com\r\nTo: " + u + "@example.com\r\nSubject: fleet\r\n\r\nHello.\r\n"
			f.s.dovecot.Deliver(f.t, u+"@example.com", []byte(msg))
		})
	}
	wg.Wait()
}

// leaseOwners reads the live leases from the cluster's table: user to
// instance id.
func leaseOwners(ctx context.Context, url string) (map[string]string, error) {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return nil, err
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, "SELECT user_name, owner FROM xapsproxy_leases WHERE expires > now()")
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for rows.Next() {
		var user []byte
		var owner string
		if err := rows.Scan(&user, &owner); err != nil {
			return nil, err
		}
		out[string(user)] = owner
	}
	return out, rows.Err()
}
