package main

// Three instances on one PostgreSQL in front of one Dovecot with 1 000
// accounts: every account is watched exactly once, a registration taken by
// any instance pushes from the account's owner, an instance killed with
// SIGKILL has its accounts watched again within 15 s with the mail
// delivered meanwhile pushed exactly once, and a restarted instance gets its
// share back.

import (
	"fmt"
	"os/exec"
	"slices"
	"testing"
	"time"

	"github.com/xapsproxy/xapsproxy/store"
)

const (
	fleetAccounts = 1000
	// takeoverBound is what the multi-instance setup promises: the
	// accounts of a killed instance are owned again within it.
	takeoverBound = 15 * time.Second
)

func TestClusterThreeInstances(t *testing.T) {
	if testing.Short() {
		t.Skip("1 000 accounts, three instances")
	}
	t.Parallel()
	f := newFleet(t, fleetAccounts)
	procs := f.start(3)
	started := time.Now()
	// Each has joined and claimed its share (on a loaded machine one may
	// join after the others own everything), then everything is watched.
	waitLong(t, "each instance to own a share", func() bool {
		return len(invert(f.owners(procs))) == len(procs)
	})
	f.waitWatchedOnce(2 * time.Minute)
	t.Logf("%d accounts watched exactly once %v after three instances started", fleetAccounts, time.Since(started).Round(time.Millisecond))
	total := 0
	for i, p := range procs {
		n := owned(t, p)
		t.Logf("instance %d owns %d accounts", i, n)
		if n < fleetAccounts/6 {
			t.Errorf("instance %d owns %d of %d accounts: the load is not spread", i, n, fleetAccounts)
		}
		total += n
	}
	if total != fleetAccounts {
		t.Errorf("the instances own %d accounts in all, want %d", total, fleetAccounts)
	}

	// A new device of an account another instance owns registers on the
	// first: the owner pushes to it.
	a := procs[0]
	owners := f.owners(procs)
	if len(owners) != fleetAccounts {
		t.Errorf("%d accounts have a live lease, want %d", len(owners), fleetAccounts)
	}
	var user string
	var userIdx int
	for i := range fleetAccounts {
		if owners[fleetUser(i)] != a {
			user, userIdx = fleetUser(i), i
			break
		}
	}
	d := dialProxy(t, f.s, a)
	d.loginAsAndRegister(user, "pw", v2Line, "2")
	f.deliverTo([]string{user})
	reqs := f.s.apns.WaitRequests(t, 2, waitTimeout)
	tokens := []string{reqs[0].Token, reqs[1].Token}
	slices.Sort(tokens)
	if want := []string{fleetToken(userIdx), v2Token}; !slices.Equal(tokens, want) {
		t.Fatalf("pushes to %v, want one to each of %s's devices %v", tokens, user, want)
	}
	sent := 2
	// Once the owner has recorded the answer: a SIGKILL between APNs'
	// answer and that record would have the next owner send it again
	// (at least once, as after any crash), which is not what this test
	// is about.
	st, err := store.OpenPostgres(t.Context(), f.url)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	waitUntil(t, "the outbox to be empty", func() bool {
		owed, err := st.Outbox(t.Context())
		return err == nil && len(owed) == 0
	})
	// Its session is a backend session of user's too: gone before the
	// sessions are counted again.
	d.conn.Close()

	// The second instance dies; mail comes for its accounts at once.
	victim := procs[1]
	var victims []string
	for i := range fleetAccounts {
		if u := fleetUser(i); u != user && owners[u] == victim && len(victims) < 20 {
			victims = append(victims, u)
		}
	}
	killed := time.Now()
	victim.kill()
	f.deliverTo(victims)
	survivors := []*serveProc{procs[0], procs[2]}
	waitLong(t, "every account owned by the two instances left", func() bool {
		return len(f.owners(survivors)) == fleetAccounts
	})
	ownedAgain := time.Since(killed)
	f.waitWatchedOnce(time.Minute)
	rewatched := time.Since(killed)
	t.Logf("the killed instance's accounts owned again %v after SIGKILL, watched again after %v",
		ownedAgain.Round(time.Millisecond), rewatched.Round(time.Millisecond))
	if ownedAgain > takeoverBound {
		t.Errorf("accounts owned again %v after the kill, want at most %v", ownedAgain, takeoverBound)
	}
	reqs = f.s.apns.WaitRequests(t, sent+len(victims), time.Minute)
	per := map[string]int{}
	for _, r := range reqs[sent:] {
		per[r.Token]++
	}
	for _, u := range victims {
		i := slices.Index(allUsers(fleetAccounts), u)
		if n := per[fleetToken(i)]; n != 1 {
			t.Errorf("%s: %d pushes for the mail delivered during the takeover, want 1", u, n)
		}
	}
	sent += len(victims)
	// One more mail to the first victim is the next push: nothing else
	// was owed.
	f.deliverTo(victims[:1])
	reqs = f.s.apns.WaitRequests(t, sent+1, waitTimeout)
	if got := reqs[sent].Token; got != fleetToken(slices.Index(allUsers(fleetAccounts), victims[0])) {
		t.Errorf("push after the takeover went to %s, want %s's device", got, victims[0])
	}
	sent++

	// Restarted, it gets its share back, and nothing is watched twice.
	procs[1] = startServe(t, f.cfgPath)
	waitLong(t, "the restarted instance to own a share", func() bool {
		return owned(t, procs[1]) >= fleetAccounts/6
	})
	f.waitWatchedOnce(time.Minute)
	for i, p := range procs {
		t.Logf("after the restart instance %d owns %d accounts", i, owned(t, p))
	}
	if got := len(f.s.apns.Requests()); got != sent {
		t.Errorf("%d pushes in all, want %d", got, sent)
		for i, r := range f.s.apns.Requests() {
			t.Logf("push %d: token %s at %s conn %d apns-id %s", i, r.Token[56:], r.Received.Format("15:04:05.000"), r.Conn, r.APNsID)
		}
	}

	// A device deleted with the command, on no instance: the account's
	// owner stops watching it at once, not at its next full look.
	gone := victims[1]
	out, err := exec.Command(binary(t), "registrations", "-config", f.cfgPath, "delete", gone,
		fleetToken(slices.Index(allUsers(fleetAccounts), gone))).CombinedOutput()
	if err != nil {
		t.Fatalf("registrations delete: %v\n%s", err, out)
	}
	waitUntil(t, gone+"'s watcher to end", func() bool { return f.sessions()[gone] == 0 })
}

func allUsers(n int) []string {
	users := make([]string, n)
	for i := range n {
		users[i] = fleetUser(i)
	}
	return users
}

// Dovecot posts its events to one instance only; the accounts the other
// owns are pushed by it, each mail once.
func TestClusterDovecotEvents(t *testing.T) {
	t.Parallel()
	const accounts = 60
	addrA := freeAddr(t)
	f := newFleetWith(t, accounts, addrA)
	cfgB := f.config("b", fmt.Sprintf("listen = %q", addrA), fmt.Sprintf("listen = %q", freeAddr(t)))
	procs := f.startConfigs(f.cfgPath, cfgB)
	st, err := store.OpenPostgres(t.Context(), f.url)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var owners map[string]*serveProc
	waitLong(t, "every account owned, by both instances, and looked at once (its baseline)", func() bool {
		owners = f.owners(procs)
		if len(owners) != accounts {
			return false
		}
		// The first may own them all for a moment, until the second
		// has joined.
		if len(invert(owners)) != len(procs) {
			return false
		}
		for i := range accounts {
			if _, err := st.MailboxState(t.Context(), fleetUser(i), "INBOX"); err != nil {
				return false
			}
		}
		return true
	})
	var ofB []string
	for i := range accounts {
		if owners[fleetUser(i)] == procs[1] {
			ofB = append(ofB, fleetUser(i))
		}
	}
	if len(ofB) == 0 || len(ofB) == accounts {
		t.Fatalf("the second instance owns %d of %d accounts: the load is not spread", len(ofB), accounts)
	}
	f.deliverTo(allUsers(accounts))
	reqs := f.s.apns.WaitRequests(t, accounts, waitTimeout)
	per := map[string]int{}
	for _, r := range reqs {
		per[r.Token]++
	}
	for i := range accounts {
		if n := per[fleetToken(i)]; n != 1 {
			t.Errorf("%s (owned by instance %d): %d pushes, want 1", fleetUser(i), slices.Index(procs, owners[fleetUser(i)]), n)
		}
	}
	// The next mail to an account of the second instance is the next
	// push: nothing else was sent twice.
	f.deliverTo(ofB[:1])
	reqs = f.s.apns.WaitRequests(t, accounts+1, waitTimeout)
	if want := fleetToken(slices.Index(allUsers(accounts), ofB[0])); reqs[accounts].Token != want {
		t.Errorf("push %d went to %s, want %s's device", accounts+1, reqs[accounts].Token, ofB[0])
	}
	if got := len(f.s.apns.Requests()); got != accounts+1 {
		t.Errorf("%d pushes in all, want %d", got, accounts+1)
	}

	// Stopped with SIGTERM, the second hands its accounts over: the first
	// owns them at once, not after the leases' expiry, and pushes their mail.
	stopped := time.Now()
	procs[1].terminate()
	waitUntil(t, "the first instance to own every account", func() bool {
		return len(f.owners(procs[:1])) == accounts
	})
	t.Logf("accounts of the instance stopped owned by the other %v after SIGTERM", time.Since(stopped).Round(time.Millisecond))
	if d := time.Since(stopped); d > clusterTTL {
		t.Errorf("the hand-over took %v, as long as a lease's expiry (%v)", d, clusterTTL)
	}
	f.deliverTo(ofB)
	reqs = f.s.apns.WaitRequests(t, accounts+1+len(ofB), waitTimeout)
	per = map[string]int{}
	for _, r := range reqs[accounts+1:] {
		per[r.Token]++
	}
	for _, u := range ofB {
		if n := per[fleetToken(slices.Index(allUsers(accounts), u))]; n != 1 {
			t.Errorf("%s after the hand-over: %d pushes, want 1", u, n)
		}
	}
}

// invert maps each instance to the accounts it owns.
func invert(owners map[string]*serveProc) map[*serveProc][]string {
	out := map[*serveProc][]string{}
	for u, p := range owners {
		out[p] = append(out[p], u)
	}
	return out
}
