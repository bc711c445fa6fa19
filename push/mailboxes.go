package push

import (
	"maps"
	"slices"
	"strings"

	"github.com/xapsproxy/xapsproxy/store"
)

// MaxPushMailboxes bounds the mailboxes one push names in its "m" array.
// Each entry is 35 bytes of JSON, so 20 keep the body far under APNs's
// 4 KiB limit whatever the account id. When more registered mailboxes have
// news at once, the push names the first 20 in sorted order; Mail still
// wakes and syncs the account, and a later push names the others as they
// change again.
const MaxPushMailboxes = 20

// registeredName returns the registration's own spelling of mailbox (an
// event's name), and whether the registration asked for it at all. It
// matches as store.Registration.HasMailbox does: INBOX in any case, every
// other name exactly.
func registeredName(reg *store.Registration, mailbox string) (string, bool) {
	inbox := strings.EqualFold(mailbox, "INBOX")
	for _, m := range reg.Mailboxes {
		if m == mailbox || inbox && strings.EqualFold(m, "INBOX") {
			return m, true
		}
	}
	return "", false
}

// testMailbox is the mailbox a test push (PushUser) names: the
// registration's INBOX, else its first mailbox; INBOX if it lists none (a
// version 1 registration means INBOX).
func testMailbox(reg *store.Registration) string {
	if name, ok := registeredName(reg, "INBOX"); ok {
		return name
	}
	if len(reg.Mailboxes) > 0 {
		return reg.Mailboxes[0]
	}
	return "INBOX"
}

// mailboxSet is the registered names a push is for.
type mailboxSet map[string]struct{}

func (s *mailboxSet) add(names ...string) {
	if len(names) == 0 {
		return
	}
	if *s == nil {
		*s = mailboxSet{}
	}
	for _, n := range names {
		(*s)[n] = struct{}{}
	}
}

func (s *mailboxSet) addSet(o mailboxSet) {
	for n := range o {
		s.add(n)
	}
}

// list is the names sorted, at most MaxPushMailboxes of them.
func (s mailboxSet) list() []string {
	names := slices.Sorted(maps.Keys(s))
	return names[:min(len(names), MaxPushMailboxes)]
}
