package dovecot

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/xapsproxy/xapsproxy/event"
)

// FuzzParse: any body either is refused or gives hints with a user and a
// mailbox, one per (mailbox, what), that say the same when sent again.
func FuzzParse(f *testing.F) {
	for _, seed := range []string{
		`{"user":"alice","events":[{"mailbox":"INBOX","what":"arrived","uidvalidity":7,"uidnext":43}]}`,
		`{"user":"alice","events":[{"mailbox":"INBOX","what":"arrived","uidnext":43},{"mailbox":"INBOX","what":"arrived","uidvalidity":8,"uidnext":41},{"mailbox":"A\u0001\"\\","what":"gone"}]}`,
		`{"user":"bob","x":[1,2],"events":[{"mailbox":"Notes","what":"flags"},{"mailbox":"Notes","what":"unknown"},{"mailbox":"Notes","what":"expunged"}]}`,
		`{"user":"","events":[]}`,
		`{"user":"a","events":[{"mailbox":"b","what":"moved"}]}`,
		`[]`, ``, `{"user":"a","events":[{"mailbox":"b","what":"flags","uidnext":-1}]}`,
	} {
		f.Add([]byte(seed))
	}
	names := map[event.What]string{}
	for name, what := range whats {
		names[what] = name
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		hints, err := parse(body)
		if err != nil {
			if hints != nil {
				t.Fatalf("hints %v with error %v", hints, err)
			}
			return
		}
		if len(hints) == 0 || len(hints) > maxEvents {
			t.Fatalf("%d hints", len(hints))
		}
		again := request{User: hints[0].User}
		seen := map[[2]string]bool{}
		for _, h := range hints {
			name, ok := names[h.What]
			if h.User != hints[0].User || h.User == "" || h.Mailbox == "" || !ok {
				t.Fatalf("hint %+v", h)
			}
			if k := [2]string{h.Mailbox, name}; seen[k] {
				t.Fatalf("two hints for %v", k)
			} else {
				seen[k] = true
			}
			again.Events = append(again.Events, requestEvent{Mailbox: h.Mailbox, What: name, UIDValidity: h.UIDValidity, UIDNext: h.UIDNext})
		}
		b, err := json.Marshal(again)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := parse(b); err != nil || !reflect.DeepEqual(got, hints) {
			t.Fatalf("sent again as %s: %+v, %v; want %+v", b, got, err, hints)
		}
	})
}
