package push

import (
	"fmt"
	"testing"
	"time"
)

// The log keeps perUser pushes per user, newest first, and forgets the
// least recently pushed users beyond its bound.
func TestRecentLogBounded(t *testing.T) {
	l := newRecentLog(RecentPerUser, RecentUsers)
	at := time.Unix(1_700_000_000, 0)
	for i := range 25 {
		l.add("alice", RecentPush{At: at.Add(time.Duration(i) * time.Second), Status: 200 + i})
	}
	got := l.get("alice")
	if len(got) != RecentPerUser || got[0].Status != 224 || got[RecentPerUser-1].Status != 215 {
		t.Fatalf("alice's pushes = %d, first %d, last %d; want %d, 224 ... 215", len(got), got[0].Status, got[len(got)-1].Status, RecentPerUser)
	}
	for i := range RecentUsers + 500 {
		l.add(fmt.Sprintf("user%d", i), RecentPush{Status: 200})
		if i == 1000 {
			l.add("alice", RecentPush{Status: 299}) // pushed again: kept longer than users 0 to 1000
		}
	}
	if n := l.len(); n != RecentUsers {
		t.Errorf("%d users kept, want %d", n, RecentUsers)
	}
	if l.get("user0") != nil || l.get("user500") != nil {
		t.Error("the least recently pushed users are still kept")
	}
	if l.get("user501") == nil || l.get(fmt.Sprint("user", RecentUsers+499)) == nil {
		t.Error("recently pushed users were forgotten")
	}
	if got := l.get("alice"); len(got) != RecentPerUser || got[0].Status != 299 {
		t.Errorf("alice, pushed again after 1000 others, lost her pushes: %d", len(got))
	}
	// get returns a copy.
	got = l.get("alice")
	got[0].Status = 0
	if l.get("alice")[0].Status != 299 {
		t.Error("changing get's result changed the log")
	}
}
