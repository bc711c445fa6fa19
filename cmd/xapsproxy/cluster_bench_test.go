package main

// The multi-instance report README quotes: accounts per instance, the time
// until a killed instance's accounts are watched again, and the latency
// from delivery to push with three instances against one, measured in the
// same run on the same machine. Run it with
//
//	XAPSPROXY_BENCH_CLUSTER=1 go test ./cmd/xapsproxy -run TestClusterReport -v -timeout 20m
//
// (it needs Dovecot and PostgreSQL, like the tests).

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

// reportMails is how many mails each latency measurement delivers, one
// after the other.
const reportMails = 60

func TestClusterReport(t *testing.T) {
	if os.Getenv("XAPSPROXY_BENCH_CLUSTER") != "1" {
		t.Skip("set XAPSPROXY_BENCH_CLUSTER=1 for the multi-instance report")
	}
	var report strings.Builder
	var base time.Duration
	for _, n := range []int{1, 3} {
		t.Run(fmt.Sprintf("instances=%d", n), func(t *testing.T) {
			f := newFleet(t, fleetAccounts)
			procs := f.start(n)
			started := time.Now()
			waitLong(t, "each instance to own a share", func() bool {
				return len(invert(f.owners(procs))) == n
			})
			f.waitWatchedOnce(2 * time.Minute)
			watched := time.Since(started)
			var shares []string
			for _, p := range procs {
				shares = append(shares, fmt.Sprint(owned(t, p)))
			}
			p50, p95 := f.pushLatency(t, reportMails)
			if n == 1 {
				base = p50
			}
			fmt.Fprintf(&report, "%d instance(s): %d accounts watched once after %v; accounts per instance %s; delivery→push p50 %v p95 %v",
				n, fleetAccounts, watched.Round(10*time.Millisecond), strings.Join(shares, "/"), p50.Round(100*time.Microsecond), p95.Round(100*time.Microsecond))
			if n > 1 {
				fmt.Fprintf(&report, " (p50 %.2f× one instance's)", float64(p50)/float64(base))
				killed := time.Now()
				procs[n-1].kill()
				waitLong(t, "every account owned by the instances left", func() bool {
					return len(f.owners(procs[:n-1])) == fleetAccounts
				})
				ownedAgain := time.Since(killed)
				f.waitWatchedOnce(time.Minute)
				fmt.Fprintf(&report, "; SIGKILL of one: its accounts owned again after %v, watched again after %v",
					ownedAgain.Round(10*time.Millisecond), time.Since(killed).Round(10*time.Millisecond))
			}
			report.WriteString("\n")
		})
	}
	t.Logf("multi-instance report:\n%s", report.String())
}

// pushLatency delivers mails to accounts spread over the fleet, one at a
// time, and returns the median and 95th percentile of delivery to push.
func (f *fleet) pushLatency(t *testing.T, mails int) (p50, p95 time.Duration) {
	t.Helper()
	var lat []time.Duration
	sent := len(f.s.apns.Requests())
	for k := range mails {
		i := (k * 997) % f.accounts // spread over the accounts, hence the instances
		start := time.Now()
		f.deliverTo([]string{fleetUser(i)})
		reqs := f.s.apns.WaitRequests(t, sent+1, waitTimeout)
		if reqs[sent].Token != fleetToken(i) {
			t.Fatalf("push to %s, want %s's device", reqs[sent].Token, fleetUser(i))
		}
		lat = append(lat, reqs[sent].Received.Sub(start))
		sent++
	}
	slices.Sort(lat)
	return lat[len(lat)/2], lat[len(lat)*95/100]
}
