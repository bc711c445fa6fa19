// Package xapsd reads the registration database of dovecot-xaps-daemon
// (xapsd), the push daemon that Dovecot's XAPS plugin talked to, so that
// `xapsproxy import-xapsd` can take its devices over.
//
// The daemon keeps every registration in one JSON file (databaseFile in
// its xapsd.yaml; /var/lib/xapsd/database.json in its packaging, and
// wherever -database pointed in versions before 2020), written by Go's
// json.MarshalIndent of:
//
//	{"Users": {"<user>": {"Accounts": {"<account id>": {
//	    "DeviceToken": "<hex>", "Mailboxes": ["INBOX", ...],
//	    "RegistrationTime": "<RFC 3339>"}}}},
//	 "AppleCerts": {...}}
//
// One entry per user and account id (so one device token may appear under
// several account ids). RegistrationTime, the time of the latest
// registration, came in 2019; versions before have none. AppleCerts, the
// certificates the daemon once obtained from Apple itself, was there from
// late 2020 until 2025; it is skipped here. Users are as the plugin named
// them (Dovecot's user name), lowercased by versions since 2023.
//
// Read parses the file strictly (unknown keys, trailing data and files
// larger than MaxSize are errors) but judges each account on its own: an
// account the daemon could not have written is returned as a Record with
// Err set, and the rest are still read.
package xapsd

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// MaxSize bounds the file Read accepts: about 200 000 registrations as
// the daemon writes them.
const MaxSize = 64 << 20

// Bounds on what one record may hold before it is refused outright; the
// finer rules are the caller's (those of a live registration).
const (
	maxNameLen  = 1024 // user names and account ids
	maxTokenLen = 1024
)

// Record is one account of one user in the daemon's database.
type Record struct {
	User        string    // the key under Users, as stored
	AccountID   string    // the key under Accounts
	DeviceToken string    // as stored (the daemon kept what the plugin sent)
	Mailboxes   []string  // as stored; nil when absent or empty
	Time        time.Time // RegistrationTime; zero when absent or zero
	// Err says why the record cannot be taken over as it is (a field of
	// the wrong type, a token that is no string); nil when it reads well.
	// The caller still applies its own rules to a record without Err.
	Err error
}

// Database is what Read found.
type Database struct {
	Records []Record // sorted by user, then account id
	// AppleCerts is true when the file holds the daemon's own copy of
	// certificates it obtained from Apple (2020 to 2025 versions).
	AppleCerts bool
}

// Read parses a database file from r.
func Read(r io.Reader) (*Database, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("read: %w", err)
	}
	if len(data) > MaxSize {
		return nil, fmt.Errorf("larger than %d MiB: not a dovecot-xaps-daemon database", MaxSize>>20)
	}
	return Parse(data)
}

// Parse parses the contents of a database file. An empty file (the
// daemon's, before its first write) is an empty database.
func Parse(data []byte) (*Database, error) {
	if !utf8.Valid(data) {
		return nil, errors.New("not UTF-8 text: not a dovecot-xaps-daemon database")
	}
	db := &Database{}
	if len(bytes.TrimSpace(data)) == 0 {
		return db, nil
	}
	var top fileJSON
	if err := decodeStrict(data, &top, "Users", "AppleCerts"); err != nil {
		return nil, fmt.Errorf("not a dovecot-xaps-daemon database: %w", err)
	}
	db.AppleCerts = len(top.AppleCerts) > 0 && !bytes.Equal(top.AppleCerts, []byte("null"))
	var users map[string]json.RawMessage
	if err := decodeMap(top.Users, &users); err != nil {
		return nil, fmt.Errorf("not a dovecot-xaps-daemon database: Users: %w", err)
	}
	for _, user := range sortedKeys(users) {
		db.Records = append(db.Records, readUser(user, users[user])...)
	}
	return db, nil
}

// The daemon's types, as its json.MarshalIndent writes them.
type (
	fileJSON struct {
		Users      json.RawMessage // an object: user -> userJSON
		AppleCerts json.RawMessage
	}
	userJSON struct {
		Accounts json.RawMessage // an object: account id -> accountJSON
	}
	accountJSON struct {
		DeviceToken      string
		Mailboxes        []string
		RegistrationTime *time.Time
	}
)

// readUser reads the accounts of one user; a user entry that is not one
// is a single Record with Err.
func readUser(user string, raw json.RawMessage) []Record {
	var u userJSON
	var accounts map[string]json.RawMessage
	err := decodeStrict(raw, &u, "Accounts")
	if err == nil {
		err = decodeMap(u.Accounts, &accounts)
	}
	if err != nil {
		return []Record{{User: user, Err: fmt.Errorf("user entry: %w", err)}}
	}
	var recs []Record
	for _, id := range sortedKeys(accounts) {
		recs = append(recs, readAccount(user, id, accounts[id]))
	}
	return recs
}

func readAccount(user, id string, raw json.RawMessage) Record {
	rec := Record{User: user, AccountID: id}
	var a accountJSON
	if err := decodeStrict(raw, &a, "DeviceToken", "Mailboxes", "RegistrationTime"); err != nil {
		rec.Err = fmt.Errorf("account entry: %w", err)
		return rec
	}
	rec.DeviceToken = a.DeviceToken
	if len(a.Mailboxes) > 0 {
		rec.Mailboxes = a.Mailboxes
	}
	if a.RegistrationTime != nil && !a.RegistrationTime.IsZero() {
		rec.Time = *a.RegistrationTime
	}
	switch {
	case len(user) > maxNameLen:
		rec.Err = errors.New("user name too long")
	case len(id) > maxNameLen:
		rec.Err = errors.New("account id too long")
	case len(a.DeviceToken) > maxTokenLen:
		rec.Err = errors.New("device token too long")
	case rec.Time.After(time.Now().Add(24 * time.Hour)):
		rec.Err = fmt.Errorf("registration time %s is in the future", rec.Time.UTC().Format(time.RFC3339))
	}
	return rec
}

// decodeMap decodes an object of any keys, each once, into m; absent or
// null is an empty map.
func decodeMap(data json.RawMessage, m *map[string]json.RawMessage) error {
	if len(data) == 0 {
		return nil
	}
	return decodeStrict(data, m)
}

// decodeStrict decodes one JSON value into v. If v is a struct, keys are
// the names of its fields, exactly as the daemon wrote them (encoding/json
// alone would take "devicetoken" for DeviceToken, and ignore others);
// in any object a key may appear once (encoding/json would keep the last
// silently); nothing may follow the value.
func decodeStrict(data []byte, v any, keys ...string) error {
	if err := checkKeys(data, keys); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("data after the JSON value")
	}
	return nil
}

// checkKeys looks at the keys of data if it is an object: each once, and
// each one of keys unless keys is empty. Anything else about data is left
// for the decoder to judge.
func checkKeys(data []byte, keys []string) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil
	}
	seen := map[string]bool{}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil
		}
		key, _ := t.(string)
		if seen[key] {
			return fmt.Errorf("key %q appears twice", key)
		}
		seen[key] = true
		if len(keys) > 0 && !slices.Contains(keys, key) {
			return fmt.Errorf("unknown key %q", key)
		}
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return nil
		}
	}
	return nil
}

func sortedKeys(m map[string]json.RawMessage) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, strings.Compare)
	return keys
}
