package watch

import (
	"testing"

	"github.com/xapsproxy/xapsproxy/internal/imapnotify"
)

// What the backend's updates on the mailbox in IDLE signal, in order.
func TestSignals(t *testing.T) {
	fetch := func(n uint32, onlyRecent bool) imapnotify.Update {
		return imapnotify.Update{Kind: imapnotify.UpdateFetch, Num: n, OnlyRecent: onlyRecent}
	}
	for _, tc := range []struct {
		name            string
		updates         []imapnotify.Update
		exists, changed bool
		looked          uint32
	}{
		{"flags of a message looked at", []imapnotify.Update{fetch(3, false)}, false, true, 3},
		{"flags of the new mail", []imapnotify.Update{{Kind: imapnotify.UpdateExists, Num: 4}, fetch(4, false)}, true, false, 3},
		{"hibernation's \\Recent", []imapnotify.Update{fetch(1, true)}, false, false, 3},
		{"an expunge shifts the messages looked at", []imapnotify.Update{{Kind: imapnotify.UpdateExpunge, Num: 1}, fetch(3, false)}, false, true, 2},
		{"expunges below zero", []imapnotify.Update{{Kind: imapnotify.UpdateExpunge, Num: 1}, {Kind: imapnotify.UpdateExpunge, Num: 1},
			{Kind: imapnotify.UpdateExpunge, Num: 1}, {Kind: imapnotify.UpdateExpunge, Num: 1}}, false, true, 0},
		{"updates lost", []imapnotify.Update{{Kind: imapnotify.UpdateLost}}, true, true, 3},
	} {
		s := signals{looked: 3}
		for _, u := range tc.updates {
			s.apply(u)
		}
		if s.exists != tc.exists || s.changed != tc.changed || s.looked != tc.looked {
			t.Errorf("%s: %+v, want exists %v, changed %v, looked %d", tc.name, s, tc.exists, tc.changed, tc.looked)
		}
	}
}
