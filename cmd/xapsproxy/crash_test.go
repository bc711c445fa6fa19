package main

// Dovecot killed with SIGKILL under 200 watched accounts, with mail
// delivered just before the kill and right after the restart: every
// account gets exactly one push per mail, from every source.

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/xapsproxy/xapsproxy/config"
	"github.com/xapsproxy/xapsproxy/internal/dovecottest"
	"github.com/xapsproxy/xapsproxy/store"
	"github.com/xapsproxy/xapsproxy/watch"
)

const crashAccounts = 200

// crashTimeout bounds each wait of the test: 200 logins, deliveries and
// pushes on a loaded 2-core machine take a while.
const crashTimeout = time.Minute

func waitLong(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(crashTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", crashTimeout, what)
		}
		time.Sleep(20 * time.Millisecond) // polling interval, not synchronisation
	}
}

// crashDovecot is a Dovecot for crashAccounts users, with room for one
// connection each and the shipped events hook posting to eventsURL ("" for
// none).
func crashDovecot(t *testing.T, eventsURL string) dovecottest.Options {
	users := make(map[string]string, crashAccounts)
	for i := range crashAccounts {
		users[crashUser(i)] = "pw"
	}
	// Every connection of a single-uid Dovecot takes one of the uid's
	// inotify instances (fs.inotify.max_user_instances, 128 on Debian);
	// past it Dovecot looks for changes every mailbox_idle_check_interval,
	// which the test template sets to 1s (README: Dovecot's limits).
	extra := `
default_client_limit = 2000
service imap {
  process_limit = 1000
}
`
	if eventsURL != "" {
		extra += dovecottest.EventsHook(t, eventsURL, eventsSecret)
	}
	return dovecottest.Options{Users: users, ExtraConfig: extra, Exclusive: true}
}

func crashUser(i int) string { return fmt.Sprintf("user%03d", i) }

func crashToken(i int) string { return fmt.Sprintf("%064x", i+1) }

func TestDovecotKilledUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("200 accounts")
	}
	t.Parallel()
	for _, source := range []string{config.SourceDovecot, config.SourceNotify} {
		t.Run(source, func(t *testing.T) {
			t.Parallel()
			var s *stack
			if source == config.SourceDovecot {
				addr := freeAddr(t)
				s = newStackWith(t, crashDovecot(t, "http://"+addr+"/dovecot/events"),
					fmt.Sprintf("\n[events]\nlisten = %q\nsecret = %q\n", addr, eventsSecret))
				s.dovecot.InstallEventsScript(t)
				s.secrets = append(s.secrets, eventsSecret)
			} else {
				s = newStackWith(t, crashDovecot(t, ""), "")
			}
			s.cfg.Watch.Source = source
			s.cfg.Watch.CatchUpRate = 1000
			s.cfg.Watch.MaxConcurrentLogins = 16
			registerCrashAccounts(t, s.cfg.Store.Path)
			s.start()
			waitLong(t, "every account watched", func() bool {
				st := s.app.watch.Stats()
				if source == config.SourceDovecot {
					return st.Owners == crashAccounts && st.CatchUps == crashAccounts
				}
				return st.Watchers[watch.StateWatching] == crashAccounts
			})

			// Half the accounts get mail just before the kill, the other
			// half right after the restart, while connections come back.
			half := crashAccounts / 2
			deliverEach(t, s, 0, half)
			s.dovecot.Kill(t)
			s.dovecot.Restart(t)
			deliverEach(t, s, half, crashAccounts)

			reqs := s.apns.WaitRequests(t, crashAccounts, crashTimeout)
			// Nothing more: every account is watched again, and a last
			// mail to each of a few accounts is its next push.
			waitLong(t, "every account watched again", func() bool {
				st := s.app.watch.Stats()
				return source == config.SourceDovecot || st.Watchers[watch.StateWatching] == crashAccounts
			})
			deliverEach(t, s, 0, 3)
			deadline := time.Now().Add(crashTimeout)
			for len(s.apns.Requests()) < crashAccounts+3 && time.Now().Before(deadline) {
				time.Sleep(50 * time.Millisecond) // polling the fake APNs
			}
			reqs = s.apns.Requests()
			per := map[string]int{}
			for _, r := range reqs {
				per[r.Token]++
			}
			for i := range crashAccounts {
				want := 1
				if i < 3 {
					want = 2
				}
				if got := per[crashToken(i)]; got != want {
					t.Errorf("%s: %d pushes, want %d", crashUser(i), got, want)
				}
			}
			if len(reqs) != crashAccounts+3 {
				t.Errorf("%d pushes in all, want %d", len(reqs), crashAccounts+3)
			}
		})
	}
}

// registerCrashAccounts stores one registration (INBOX) per account, with
// the baseline a registration through the proxy would have taken: an
// empty INBOX.
func registerCrashAccounts(t *testing.T, path string) {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	now := time.Now()
	for i := range crashAccounts {
		r := store.Registration{User: crashUser(i), DeviceToken: crashToken(i), AccountID: fmt.Sprintf("ACCOUNT-%d", i),
			Subtopic: "com.apple.mobilemail", Mailboxes: []string{"INBOX"}, Version: 2, Topic: topic, Registered: now, Renewed: now}
		if err := st.Register(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
}

// deliverEach delivers one mail to each account in [from, to), several at
// once.
func deliverEach(t *testing.T, s *stack, from, to int) {
	t.Helper()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i := from; i < to; i++ {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			msg := "From: bob@example.com\r\nTo: " + crashUser(i) + "@example.com\r\nSubject: around the crash\r\n\r\nHello.\r\n"
			s.dovecot.Deliver(t, crashUser(i)+"@example.com", []byte(msg))
		})
	}
	wg.Wait()
}
