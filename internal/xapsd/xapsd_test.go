package xapsd

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// The daemon's own types (internal/database/database.go of
// dovecot-xaps-daemon), to write files exactly as it does: Go's
// json.MarshalIndent(db, "", "  ") of the whole Database.
type (
	daemonAccount struct {
		DeviceToken      string
		Mailboxes        []string
		RegistrationTime time.Time
	}
	daemonUser struct {
		Accounts map[string]daemonAccount
	}
	daemonDB struct {
		Users map[string]daemonUser
	}
	// Versions from late 2020 to 2025 also kept Apple's certificates.
	daemonDBCerts struct {
		Users      map[string]daemonUser
		AppleCerts struct {
			Signature []struct{ Certificate [][]byte }
			Keys      [][]byte
		}
	}
	// Versions before 2019 had no RegistrationTime.
	daemonAccount2015 struct {
		DeviceToken string
		Mailboxes   []string
	}
)

const (
	tokenA = "2918390218931890821908309283098109381029309829018310983092892829"
	tokenB = "A66216AD1683D48B9933CDCC3B98A833EE1A968143F41EA494187DA54715DA66"
)

func marshal(t *testing.T, v any) []byte {
	t.Helper()
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestReadDaemonFile(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 11, 30, 8, 15, 0, 123456789, time.UTC)
	db := daemonDB{Users: map[string]daemonUser{
		"bob": {Accounts: map[string]daemonAccount{
			"B-1": {DeviceToken: tokenB, Mailboxes: []string{"INBOX", "Notes"}, RegistrationTime: at},
		}},
		"alice": {Accounts: map[string]daemonAccount{
			"A-2": {DeviceToken: tokenA, Mailboxes: []string{"Inbox"}}, // zero time, as written before 2019's field was set
			"A-1": {DeviceToken: tokenA, Mailboxes: nil, RegistrationTime: at},
		}},
	}}
	got, err := Read(bytes.NewReader(marshal(t, db)))
	if err != nil {
		t.Fatal(err)
	}
	want := []Record{
		{User: "alice", AccountID: "A-1", DeviceToken: tokenA, Time: at},
		{User: "alice", AccountID: "A-2", DeviceToken: tokenA, Mailboxes: []string{"Inbox"}},
		{User: "bob", AccountID: "B-1", DeviceToken: tokenB, Mailboxes: []string{"INBOX", "Notes"}, Time: at},
	}
	if len(got.Records) != len(want) {
		t.Fatalf("records %+v, want %+v", got.Records, want)
	}
	for i, w := range want {
		g := got.Records[i]
		if g.User != w.User || g.AccountID != w.AccountID || g.DeviceToken != w.DeviceToken ||
			strings.Join(g.Mailboxes, ",") != strings.Join(w.Mailboxes, ",") || !g.Time.Equal(w.Time) || g.Err != nil {
			t.Errorf("record %d: %+v, want %+v", i, g, w)
		}
	}
	if got.AppleCerts {
		t.Error("AppleCerts without certificates")
	}
}

func TestReadOlderVersions(t *testing.T) {
	t.Parallel()
	old := map[string]any{"Users": map[string]any{"stefan": map[string]any{"Accounts": map[string]daemonAccount2015{
		"S-1": {DeviceToken: tokenA, Mailboxes: []string{"INBOX"}},
	}}}}
	got, err := Parse(marshal(t, old))
	if err != nil || len(got.Records) != 1 || got.Records[0].Err != nil || !got.Records[0].Time.IsZero() {
		t.Fatalf("2015 file: %+v, %v", got, err)
	}

	var certs daemonDBCerts
	certs.Users = map[string]daemonUser{"alice": {Accounts: map[string]daemonAccount{"A-1": {DeviceToken: tokenA, Mailboxes: []string{"INBOX"}}}}}
	certs.AppleCerts.Signature = []struct{ Certificate [][]byte }{{Certificate: [][]byte{[]byte("der")}}}
	certs.AppleCerts.Keys = [][]byte{[]byte("key")}
	got, err = Parse(marshal(t, certs))
	if err != nil || len(got.Records) != 1 || !got.AppleCerts {
		t.Fatalf("file with AppleCerts: %+v, %v", got, err)
	}

	for _, empty := range []string{"", "  \n", `{"Users":{}}`, `{"Users":null}`, `{}`} {
		got, err := Parse([]byte(empty))
		if err != nil || len(got.Records) != 0 {
			t.Errorf("%q: %+v, %v; want an empty database", empty, got, err)
		}
	}
}

// TestReadRefusesFiles: what no version of the daemon wrote is no
// database, and nothing of it is imported.
func TestReadRefusesFiles(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, data, want string }{
		{"not JSON", "Users: alice", "invalid character"},
		{"array", `[{"Users":{}}]`, "cannot unmarshal array"},
		{"truncated", `{"Users":{"alice":{"Accounts":{`, "unexpected EOF"},
		{"trailing data", `{"Users":{}} {"Users":{}}`, "data after the JSON value"},
		{"unknown top key", `{"Users":{},"Devices":[]}`, `unknown key "Devices"`},
		{"key in another case", `{"users":{}}`, `unknown key "users"`},
		{"key twice", `{"Users":{},"Users":{}}`, `key "Users" appears twice`},
		{"Users not an object", `{"Users":"alice"}`, "cannot unmarshal string"},
		{"not UTF-8", "{\"Users\":{\"\xff\":{}}}", "not UTF-8"},
	} {
		_, err := Parse([]byte(tc.data))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error with %q", tc.name, err, tc.want)
		}
	}
	_, err := Read(bytes.NewReader(make([]byte, MaxSize+1)))
	if err == nil || !strings.Contains(err.Error(), "larger than 64 MiB") {
		t.Errorf("a file over MaxSize: %v", err)
	}
}

// TestReadJudgesEachRecord: one bad record is reported with its reason,
// and the others are read.
func TestReadJudgesEachRecord(t *testing.T) {
	t.Parallel()
	good := `{"DeviceToken":"` + tokenA + `","Mailboxes":["INBOX"],"RegistrationTime":"2026-11-30T08:15:00Z"}`
	for _, tc := range []struct{ name, user, want string }{
		{"token a number", `{"Accounts":{"X":{"DeviceToken":12}}}`, "cannot unmarshal number"},
		{"mailboxes a string", `{"Accounts":{"X":{"DeviceToken":"ab","Mailboxes":"INBOX"}}}`, "cannot unmarshal string"},
		{"bad time", `{"Accounts":{"X":{"DeviceToken":"ab","RegistrationTime":"yesterday"}}}`, "cannot parse"},
		{"time in the future", `{"Accounts":{"X":{"DeviceToken":"ab","RegistrationTime":"2999-01-01T00:00:00Z"}}}`, "in the future"},
		{"unknown account key", `{"Accounts":{"X":{"DeviceToken":"ab","Token":"cd"}}}`, `unknown key "Token"`},
		{"account key twice", `{"Accounts":{"X":{"DeviceToken":"ab","DeviceToken":"cd"}}}`, `key "DeviceToken" appears twice`},
		{"account id twice", `{"Accounts":{"X":{"DeviceToken":"ab"},"X":{"DeviceToken":"cd"}}}`, `user entry: key "X" appears twice`},
		{"user not an object", `["X"]`, "user entry: json: cannot unmarshal array"},
		{"unknown user key", `{"Accounts":{},"Devices":{}}`, `user entry: unknown key "Devices"`},
		{"huge token", `{"Accounts":{"X":{"DeviceToken":"` + strings.Repeat("a", 2000) + `"}}}`, "device token too long"},
		{"huge account id", `{"Accounts":{"` + strings.Repeat("x", 2000) + `":{"DeviceToken":"ab"}}}`, "account id too long"},
	} {
		data := `{"Users":{"alice":{"Accounts":{"A":` + good + `}},"mallory":` + tc.user + `}}`
		db, err := Parse([]byte(data))
		if err != nil {
			t.Errorf("%s: %v; want the file read", tc.name, err)
			continue
		}
		var bad *Record
		goodOK := false
		for i, r := range db.Records {
			switch {
			case r.User == "alice" && r.Err == nil && r.DeviceToken == tokenA:
				goodOK = true
			case r.User == "mallory":
				bad = &db.Records[i]
			}
		}
		if !goodOK {
			t.Errorf("%s: the good record was not read: %+v", tc.name, db.Records)
		}
		if bad == nil || bad.Err == nil || !strings.Contains(bad.Err.Error(), tc.want) {
			t.Errorf("%s: bad record %+v, want an error with %q", tc.name, bad, tc.want)
		}
	}
}

// FuzzParse: whatever the file, Parse returns records only for accounts
// it read, each under a user key, and never panics.
func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"Users":{"alice":{"Accounts":{"A-1":{"DeviceToken":"` + tokenA + `","Mailboxes":["INBOX"],"RegistrationTime":"2026-11-30T08:15:00Z"}}}}}`))
	f.Add([]byte(`{"Users":{"a":null,"b":{"Accounts":null}},"AppleCerts":null}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		db, err := Parse(data)
		if err != nil {
			return
		}
		for _, r := range db.Records {
			if r.Err == nil && (len(r.DeviceToken) > maxTokenLen || len(r.AccountID) > maxNameLen) {
				t.Fatalf("oversized record accepted: %d, %d", len(r.DeviceToken), len(r.AccountID))
			}
		}
	})
}
