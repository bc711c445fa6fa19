package proxy

import (
	"strconv"

	"github.com/xapsproxy/xapsproxy/store"
)

// CheckRegistration applies the rules a live XAPPLEPUSHSERVICE command is
// held to (validateXAPS) to a registration that reached xapsproxy some
// other way, such as an import from another push daemon: version 1 or 2,
// a printable account id of at most 256 bytes, a 64-hex-digit device token
// (any case; returned in lower case), a valid subtopic (empty means
// com.apple.mobilemail), and mailbox names without CR, LF or NUL (none,
// or version 1, means INBOX; INBOX in any case is INBOX; duplicates go).
// The result has every field but User, Topic and the times set. Its error
// reads like the BAD a device would get, without the command name.
func CheckRegistration(version int, accountID, token, subtopic string, mailboxes []string) (store.Registration, error) {
	values := map[string]string{
		"aps-version":      strconv.Itoa(version),
		"aps-account-id":   accountID,
		"aps-device-token": token,
		"aps-subtopic":     subtopic,
	}
	req, err := validateXAPS(values, mailboxes)
	if err != nil {
		return store.Registration{}, err
	}
	return store.Registration{
		DeviceToken: req.token,
		AccountID:   req.accountID,
		Subtopic:    req.subtopic,
		Mailboxes:   req.mailboxes,
		Version:     int(req.version[0] - '0'),
	}, nil
}
