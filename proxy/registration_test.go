package proxy

import (
	"slices"
	"strings"
	"testing"
)

// CheckRegistration holds a registration from elsewhere to the rules of a
// live XAPPLEPUSHSERVICE.
func TestCheckRegistration(t *testing.T) {
	tok := strings.Repeat("AB", 32)
	r, err := CheckRegistration(2, "ACCT", tok, "", []string{"Inbox", "Notes", "INBOX"})
	if err != nil || r.DeviceToken != strings.ToLower(tok) || r.AccountID != "ACCT" || r.Subtopic != defaultSubtopic ||
		r.Version != 2 || !slices.Equal(r.Mailboxes, []string{"INBOX", "Notes"}) {
		t.Errorf("v2: %+v, %v", r, err)
	}
	if r, err := CheckRegistration(1, "ACCT", tok, "", nil); err != nil || r.Version != 1 || !slices.Equal(r.Mailboxes, []string{"INBOX"}) {
		t.Errorf("v1: %+v, %v", r, err)
	}
	for _, tc := range []struct {
		version             int
		account, token, box string
		want                string
	}{
		{3, "ACCT", tok, "INBOX", `aps-version "3" is not supported`},
		{2, "", tok, "INBOX", "needs aps-account-id"},
		{2, "A\x00", tok, "INBOX", "not a valid account id"},
		{2, strings.Repeat("a", 257), tok, "INBOX", "not a valid account id"},
		{2, "ACCT", tok[:62], "INBOX", "must be 64 hex digits"},
		{2, "ACCT", strings.Repeat("zz", 32), "INBOX", "must be 64 hex digits"},
		{2, "ACCT", tok, "a\nb", "is not valid"},
		{2, "ACCT", tok, "A\xff", "is not valid"}, // not UTF-8
	} {
		if _, err := CheckRegistration(tc.version, tc.account, tc.token, "", []string{tc.box}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc, err, tc.want)
		}
	}
}
