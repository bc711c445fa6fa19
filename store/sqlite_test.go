package store

import (
	"errors"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

const (
	tokenA = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	tokenB = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
	tokenC = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
)

// t0 has nanoseconds and a non-UTC zone, to catch lossy time storage.
var t0 = time.Date(2026, 3, 14, 15, 9, 26, 535897932, time.FixedZone("CET", 3600))

// newStore opens a store in a fresh temporary directory, closed at cleanup.
func newStore(t *testing.T) *SQLite {
	t.Helper()
	s, err := Open(t.Context(), filepath.Join(t.TempDir(), "xaps.db"))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func reg(user, token string) Registration {
	return Registration{
		User:        user,
		DeviceToken: token,
		AccountID:   "acct-" + user,
		Subtopic:    "com.apple.mobilemail",
		Mailboxes:   []string{"INBOX"},
		Version:     2,
		Topic:       "com.apple.mail.XServer.test",
		Registered:  t0,
		Renewed:     t0,
	}
}

func mustRegister(t *testing.T, s Store, rs ...Registration) {
	t.Helper()
	for _, r := range rs {
		if err := s.Register(t.Context(), r); err != nil {
			t.Fatalf("Register(%s, %s): %v", r.User, r.DeviceToken, err)
		}
	}
}

// assertRegs compares registrations, times with time.Equal to the want time
// as s keeps it (see stored) and requiring UTC, everything else exactly.
func assertRegs(t *testing.T, s Store, got, want []Registration) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d registrations %+v, want %d %+v", len(got), got, len(want), want)
	}
	for i := range got {
		g, w := got[i], want[i]
		for _, tm := range []struct {
			name      string
			got, want *time.Time
		}{
			{"Registered", &g.Registered, &w.Registered},
			{"Renewed", &g.Renewed, &w.Renewed},
			{"LastPush", &g.LastPush, &w.LastPush},
		} {
			if !tm.got.Equal(stored(s, *tm.want)) {
				t.Errorf("[%d] %s = %v, want %v", i, tm.name, *tm.got, *tm.want)
			}
			if !tm.got.IsZero() && tm.got.Location() != time.UTC {
				t.Errorf("[%d] %s location = %v, want UTC", i, tm.name, tm.got.Location())
			}
			*tm.got, *tm.want = time.Time{}, time.Time{}
		}
		if !reflect.DeepEqual(g, w) {
			t.Errorf("[%d] got %+v\nwant %+v", i, g, w)
		}
	}
}

func registrations(t *testing.T, s Store, user string) []Registration {
	t.Helper()
	got, err := s.Registrations(t.Context(), user)
	if err != nil {
		t.Fatalf("Registrations(%s): %v", user, err)
	}
	return got
}

func TestRegisterRoundTrip(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, s Store) {
		r := Registration{
			User:           "alice@example.org",
			DeviceToken:    tokenC,
			AccountID:      "0715A26B-CA09-4730-A419-793000CA982E",
			Subtopic:       "com.apple.mobilemail",
			Mailboxes:      []string{"Sent", "INBOX", "Archive/2026", "Ünïcødé"},
			Version:        1,
			Topic:          "com.apple.mail.XServer.f00",
			Registered:     t0,
			Renewed:        t0.Add(time.Hour + 1),
			LastPush:       t0.Add(2*time.Hour + 7),
			LastPushResult: "200",
		}
		mustRegister(t, s, r)
		assertRegs(t, s, registrations(t, s, r.User), []Registration{r})
	})
}

func TestRegisterZeroTimes(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, s Store) {
		r := reg("u", tokenA)
		r.Registered = time.Time{}
		mustRegister(t, s, r)
		got := registrations(t, s, "u")
		want := r
		want.Registered = r.Renewed // defaulted
		assertRegs(t, s, got, []Registration{want})
		if !got[0].LastPush.IsZero() {
			t.Errorf("LastPush = %v, want zero", got[0].LastPush)
		}
	})
}

func TestRegisterUpsert(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, s Store) {
		ctx := t.Context()
		first := reg("u", tokenA)
		mustRegister(t, s, first)
		if err := s.RecordPush(ctx, "u", tokenA, t0.Add(time.Minute), "200"); err != nil {
			t.Fatal(err)
		}

		again := reg("u", tokenA)
		again.AccountID = "restored-from-backup"
		again.Subtopic = "sub2"
		again.Mailboxes = []string{"Work", "INBOX"}
		again.Version = 1
		again.Topic = "topic2"
		again.Registered = t0.Add(24 * time.Hour) // must be ignored
		again.Renewed = t0.Add(24 * time.Hour)
		mustRegister(t, s, again)

		want := again
		want.Registered = first.Registered
		want.LastPush = t0.Add(time.Minute)
		want.LastPushResult = "200"
		assertRegs(t, s, registrations(t, s, "u"), []Registration{want})
	})
}

func TestTokenCase(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, s Store) {
		ctx := t.Context()
		upper := strings.ToUpper(tokenC)
		mustRegister(t, s, reg("u", upper))
		mustRegister(t, s, reg("u", tokenC)) // same key: must not add a row

		got := registrations(t, s, "u")
		if len(got) != 1 || got[0].DeviceToken != tokenC {
			t.Fatalf("got %+v, want one registration with token %s", got, tokenC)
		}
		if err := s.RecordPush(ctx, "u", upper, t0, "410 Unregistered"); err != nil {
			t.Fatalf("RecordPush upper-case: %v", err)
		}
		if ok, err := s.Delete(ctx, "u", upper); err != nil || !ok {
			t.Fatalf("Delete upper-case = %v, %v; want true, nil", ok, err)
		}
		mustRegister(t, s, reg("u", tokenC))
		users, err := s.DeleteToken(ctx, upper)
		if err != nil || !slices.Equal(users, []string{"u"}) {
			t.Fatalf("DeleteToken upper-case = %v, %v; want [u]", users, err)
		}
		if got := registrations(t, s, "u"); len(got) != 0 {
			t.Errorf("after DeleteToken: %+v", got)
		}
	})
}

func TestSameTokenTwoUsers(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, s Store) {
		ctx := t.Context()
		mustRegister(t, s, reg("zed", tokenA), reg("amy", tokenA), reg("amy", tokenB))
		if got := registrations(t, s, "zed"); len(got) != 1 {
			t.Fatalf("zed: %+v", got)
		}
		if got := registrations(t, s, "amy"); len(got) != 2 {
			t.Fatalf("amy: %+v", got)
		}

		users, err := s.DeleteToken(ctx, tokenA)
		if err != nil {
			t.Fatal(err)
		}
		if want := []string{"amy", "zed"}; !slices.Equal(users, want) {
			t.Errorf("DeleteToken = %v, want %v", users, want)
		}
		all, err := s.All(ctx)
		if err != nil {
			t.Fatal(err)
		}
		assertRegs(t, s, all, []Registration{reg("amy", tokenB)})

		users, err = s.DeleteToken(ctx, tokenA)
		if err != nil || len(users) != 0 {
			t.Errorf("second DeleteToken = %v, %v; want none", users, err)
		}
	})
}

func TestOrdering(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, s Store) {
		ctx := t.Context()
		for _, u := range []string{"carol", "alice", "bob"} {
			mustRegister(t, s, reg(u, tokenC), reg(u, tokenA))
		}
		mustRegister(t, s, reg("bob", tokenB))

		users, err := s.Users(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if want := []string{"alice", "bob", "carol"}; !slices.Equal(users, want) {
			t.Errorf("Users = %v, want %v", users, want)
		}

		all, err := s.All(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var keys []string
		for _, r := range all {
			keys = append(keys, r.User+"/"+r.DeviceToken[:1])
		}
		want := []string{"alice/0", "alice/a", "bob/0", "bob/a", "bob/b", "carol/0", "carol/a"}
		if !slices.Equal(keys, want) {
			t.Errorf("All order = %v, want %v", keys, want)
		}
		assertRegs(t, s, registrations(t, s, "bob"), []Registration{reg("bob", tokenC), reg("bob", tokenA), reg("bob", tokenB)})
	})
}

func TestEmptyStore(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, s Store) {
		ctx := t.Context()
		if users, err := s.Users(ctx); err != nil || len(users) != 0 {
			t.Errorf("Users = %v, %v", users, err)
		}
		if all, err := s.All(ctx); err != nil || len(all) != 0 {
			t.Errorf("All = %v, %v", all, err)
		}
		if ok, err := s.Delete(ctx, "u", tokenA); err != nil || ok {
			t.Errorf("Delete = %v, %v; want false, nil", ok, err)
		}
	})
}

func TestDelete(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, s Store) {
		ctx := t.Context()
		mustRegister(t, s, reg("u", tokenA), reg("u", tokenB), reg("v", tokenA))
		for i, want := range []bool{true, false} {
			ok, err := s.Delete(ctx, "u", tokenA)
			if err != nil || ok != want {
				t.Fatalf("Delete #%d = %v, %v; want %v", i+1, ok, err, want)
			}
		}
		all, err := s.All(ctx)
		if err != nil {
			t.Fatal(err)
		}
		assertRegs(t, s, all, []Registration{reg("u", tokenB), reg("v", tokenA)})
	})
}

func TestRecordPush(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, s Store) {
		ctx := t.Context()
		mustRegister(t, s, reg("u", tokenA), reg("v", tokenA))
		at := t0.Add(90 * time.Second)
		if err := s.RecordPush(ctx, "u", tokenA, at, "error: timeout"); err != nil {
			t.Fatal(err)
		}
		want := reg("u", tokenA)
		want.LastPush, want.LastPushResult = at, "error: timeout"
		assertRegs(t, s, registrations(t, s, "u"), []Registration{want})
		assertRegs(t, s, registrations(t, s, "v"), []Registration{reg("v", tokenA)}) // untouched

		err := s.RecordPush(ctx, "nobody", tokenA, at, "200")
		if !errors.Is(err, ErrNotFound) {
			t.Errorf("RecordPush unknown = %v, want ErrNotFound", err)
		}
	})
}

func TestMailboxState(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, s Store) {
		ctx := t.Context()
		_, err := s.MailboxState(ctx, "u", "INBOX")
		if !errors.Is(err, ErrNotFound) {
			t.Fatalf("MailboxState before set = %v, want ErrNotFound", err)
		}
		steps := []struct {
			user, mailbox string
			st            MailboxState
		}{
			{"u", "INBOX", MailboxState{UIDValidity: 1, UIDNext: 42}},
			{"u", "INBOX", MailboxState{UIDValidity: 4294967295, UIDNext: 4294967295}}, // overwrite, max uint32
			{"u", "Sent", MailboxState{UIDValidity: 7, UIDNext: 1}},
			{"v", "INBOX", MailboxState{UIDValidity: 9, UIDNext: 3}},
		}
		for _, st := range steps {
			if err := s.SetMailboxState(ctx, st.user, st.mailbox, st.st); err != nil {
				t.Fatal(err)
			}
		}
		for _, want := range steps[1:] {
			got, err := s.MailboxState(ctx, want.user, want.mailbox)
			if err != nil || got != want.st {
				t.Errorf("MailboxState(%s, %s) = %+v, %v; want %+v", want.user, want.mailbox, got, err, want.st)
			}
		}
	})
}

func TestInvalidInput(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, s Store) {
		ctx := t.Context()
		tests := []struct {
			name   string
			modify func(*Registration)
		}{
			{"empty user", func(r *Registration) { r.User = "" }},
			{"empty token", func(r *Registration) { r.DeviceToken = "" }},
			{"nil mailboxes", func(r *Registration) { r.Mailboxes = nil }},
			{"empty mailboxes", func(r *Registration) { r.Mailboxes = []string{} }},
			{"empty mailbox name", func(r *Registration) { r.Mailboxes = []string{"INBOX", ""} }},
			{"time out of range", func(r *Registration) { r.Renewed = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) }},
		}
		for _, tt := range tests {
			r := reg("u", tokenA)
			tt.modify(&r)
			err := s.Register(ctx, r)
			if !errors.Is(err, errInvalid) || !strings.HasPrefix(err.Error(), "store: register: ") {
				t.Errorf("%s: Register = %v, want a store: register: invalid argument error", tt.name, err)
			}
		}
		if err := s.SetMailboxState(ctx, "", "INBOX", MailboxState{}); !errors.Is(err, errInvalid) {
			t.Errorf("SetMailboxState empty user = %v", err)
		}
		if err := s.SetMailboxState(ctx, "u", "", MailboxState{}); !errors.Is(err, errInvalid) {
			t.Errorf("SetMailboxState empty mailbox = %v", err)
		}
		if all, err := s.All(ctx); err != nil || len(all) != 0 {
			t.Errorf("All after rejected input = %+v, %v", all, err)
		}
	})
}
