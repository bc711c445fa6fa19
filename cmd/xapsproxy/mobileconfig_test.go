package main

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// mobileconfig runs the command and returns what it wrote to stdout.
func mobileconfig(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	err := run(t.Context(), append([]string{"mobileconfig"}, args...), &out, io.Discard)
	return out.String(), err
}

const plistHeader = `<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
`

var uuidV4 = regexp.MustCompile(`^[0-9A-F]{8}-[0-9A-F]{4}-4[0-9A-F]{3}-[89AB][0-9A-F]{3}-[0-9A-F]{12}$`)

// The profile, parsed back as a property list, holds exactly the keys of a
// Configuration profile with one IMAP account, with their values and types.
func TestMobileconfigProfile(t *testing.T) {
	t.Parallel()
	user := `a<&"'>b@example.com`
	out, err := mobileconfig(t, "-user", user, "-host", "Push.Example.org.", "-org", "Example & Co <ops>")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out, plistHeader) {
		t.Errorf("profile does not start with the plist header:\n%s", out)
	}
	for _, raw := range []string{`a<&`, `& Co`, `<ops>`} {
		if strings.Contains(out, raw) {
			t.Errorf("profile holds %q unescaped:\n%s", raw, out)
		}
	}
	got := decodePlist(t, out)
	top := got.(map[string]any)
	content, ok := top["PayloadContent"].([]any)
	if !ok || len(content) != 1 {
		t.Fatalf("PayloadContent = %#v, want an array of one dict", top["PayloadContent"])
	}
	account := content[0].(map[string]any)
	for _, u := range []any{top["PayloadUUID"], account["PayloadUUID"]} {
		if s, _ := u.(string); !uuidV4.MatchString(s) {
			t.Errorf("PayloadUUID %#v is not a version 4 UUID", u)
		}
	}
	if top["PayloadUUID"] == account["PayloadUUID"] {
		t.Errorf("profile and account share the UUID %v", top["PayloadUUID"])
	}

	wantAccount := map[string]any{
		"PayloadType":                            "com.apple.mail.managed",
		"PayloadVersion":                         int64(1),
		"PayloadIdentifier":                      "org.example.push.mail." + user + ".account",
		"PayloadUUID":                            account["PayloadUUID"],
		"PayloadDisplayName":                     "Mail: " + user,
		"EmailAccountType":                       "EmailTypeIMAP",
		"EmailAccountDescription":                user,
		"EmailAddress":                           user,
		"IncomingMailServerHostName":             "push.example.org",
		"IncomingMailServerPortNumber":           int64(993),
		"IncomingMailServerUseSSL":               true,
		"IncomingMailServerAuthentication":       "EmailAuthPassword",
		"IncomingMailServerUsername":             user,
		"OutgoingMailServerHostName":             "push.example.org",
		"OutgoingMailServerPortNumber":           int64(587),
		"OutgoingMailServerUseSSL":               true,
		"OutgoingMailServerAuthentication":       "EmailAuthPassword",
		"OutgoingMailServerUsername":             user,
		"OutgoingPasswordSameAsIncomingPassword": true,
	}
	want := map[string]any{
		"PayloadType":         "Configuration",
		"PayloadVersion":      int64(1),
		"PayloadIdentifier":   "org.example.push.mail." + user,
		"PayloadUUID":         top["PayloadUUID"],
		"PayloadDisplayName":  "Mail with push: " + user,
		"PayloadOrganization": "Example & Co <ops>",
		"PayloadContent":      []any{wantAccount},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("profile:\n got %#v\nwant %#v", got, want)
	}

	// Made again for the same user and host: the same identifiers, so the
	// phone replaces the installed profile; new UUIDs.
	again, err := mobileconfig(t, "-user", user, "-host", "push.example.org", "-org", "Example & Co <ops>")
	if err != nil {
		t.Fatal(err)
	}
	top2 := decodePlist(t, again).(map[string]any)
	account2 := top2["PayloadContent"].([]any)[0].(map[string]any)
	if top2["PayloadIdentifier"] != top["PayloadIdentifier"] || account2["PayloadIdentifier"] != account["PayloadIdentifier"] {
		t.Errorf("identifiers changed between two runs: %v %v, then %v %v", top["PayloadIdentifier"], account["PayloadIdentifier"], top2["PayloadIdentifier"], account2["PayloadIdentifier"])
	}
	if top2["PayloadUUID"] == top["PayloadUUID"] || account2["PayloadUUID"] == account["PayloadUUID"] {
		t.Errorf("UUIDs repeated between two runs: %v %v", top["PayloadUUID"], account["PayloadUUID"])
	}

	checkWithPlistlib(t, out, got)
}

// The flags set the address, the ports, the outgoing server and the
// description; -o writes the file instead of stdout; no organization, no key.
func TestMobileconfigFlags(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "alice.mobileconfig")
	out, err := mobileconfig(t, "-user", "alice", "-email", "alice@example.net", "-host", "imap.example.net",
		"-port", "1993", "-smtp-host", "smtp.example.net", "-smtp-port", "465", "-description", "Work", "-o", path)
	if err != nil {
		t.Fatal(err)
	}
	if out != "" {
		t.Errorf("with -o, stdout got %q", out)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	top := decodePlist(t, string(data)).(map[string]any)
	if _, ok := top["PayloadOrganization"]; ok {
		t.Errorf("PayloadOrganization present without -org: %#v", top["PayloadOrganization"])
	}
	if top["PayloadIdentifier"] != "net.example.imap.mail.alice" {
		t.Errorf("PayloadIdentifier = %#v", top["PayloadIdentifier"])
	}
	account := top["PayloadContent"].([]any)[0].(map[string]any)
	for k, v := range map[string]any{
		"EmailAddress":                 "alice@example.net",
		"EmailAccountDescription":      "Work",
		"IncomingMailServerHostName":   "imap.example.net",
		"IncomingMailServerPortNumber": int64(1993),
		"IncomingMailServerUsername":   "alice",
		"OutgoingMailServerHostName":   "smtp.example.net",
		"OutgoingMailServerPortNumber": int64(465),
		"OutgoingMailServerUsername":   "alice",
	} {
		if !reflect.DeepEqual(account[k], v) {
			t.Errorf("%s = %#v, want %#v", k, account[k], v)
		}
	}
	checkWithPlistlib(t, string(data), top)
}

// A missing or unusable flag is one error line naming it, and nothing is
// written.
func TestMobileconfigErrors(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-host", "mail.example.com"}, "mobileconfig: -user is required"},
		{[]string{"-user", "bob@example.com"}, "mobileconfig: -host is required"},
		{[]string{"-user", "bob", "-host", "mail.example.com"}, `mobileconfig: -email is required: user "bob" is not an e-mail address`},
		{[]string{"-user", "bob@example.com", "-host", "mail.example.com:993"}, `mobileconfig: -host "mail.example.com:993" is not a host name`},
		{[]string{"-user", "bob@example.com", "-host", "mail.example.com", "-smtp-port", "0"}, "mobileconfig: -smtp-port 0 is not a port"},
		{[]string{"-user", "bob\n@example.com", "-host", "mail.example.com"}, "mobileconfig: -user contains a control character"},
	} {
		out, err := mobileconfig(t, c.args...)
		if err == nil {
			t.Errorf("%q: no error; wrote:\n%s", c.args, out)
			continue
		}
		if msg := err.Error(); !strings.HasPrefix(msg, c.want) || strings.Contains(msg, "\n") || errors.Is(err, errUsage) {
			t.Errorf("%q: error %q, want one line starting %q (not the usage text)", c.args, msg, c.want)
		}
		if out != "" {
			t.Errorf("%q: wrote %q", c.args, out)
		}
	}
}

// No password, nor a key for one, is in the profile: the phone asks.
func TestMobileconfigNoPassword(t *testing.T) {
	t.Parallel()
	out, err := mobileconfig(t, "-user", "carol@example.com", "-host", "mail.example.com")
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				keys = append(keys, k)
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(decodePlist(t, out))
	for _, k := range keys {
		if strings.Contains(strings.ToLower(k), "password") && k != "OutgoingPasswordSameAsIncomingPassword" {
			t.Errorf("profile has key %q", k)
		}
	}
	if len(keys) != 6+19 {
		t.Errorf("profile has %d keys, want 25: %q", len(keys), keys)
	}
}

// decodePlist parses an XML property list of dict, array, key, string,
// integer, true and false into map[string]any, []any, string, int64 and
// bool. It fails the test on anything else or anything malformed.
func decodePlist(t *testing.T, doc string) any {
	t.Helper()
	d := xml.NewDecoder(strings.NewReader(doc))
	d.Strict = true
	next := func() (xml.StartElement, bool, error) { // the next start element, or false at an end element
		for {
			tok, err := d.Token()
			if err != nil {
				return xml.StartElement{}, false, err
			}
			switch tok := tok.(type) {
			case xml.StartElement:
				return tok, true, nil
			case xml.EndElement:
				return xml.StartElement{}, false, nil
			case xml.CharData:
				if strings.TrimSpace(string(tok)) != "" {
					return xml.StartElement{}, false, fmt.Errorf("stray text %q", tok)
				}
			}
		}
	}
	var value func(el xml.StartElement) (any, error)
	value = func(el xml.StartElement) (any, error) {
		switch el.Name.Local {
		case "string", "integer", "key":
			var s string
			if err := d.DecodeElement(&s, &el); err != nil {
				return nil, err
			}
			if el.Name.Local == "integer" {
				return strconv.ParseInt(s, 10, 64)
			}
			return s, nil
		case "true", "false":
			if err := d.Skip(); err != nil {
				return nil, err
			}
			return el.Name.Local == "true", nil
		case "array":
			a := []any{}
			for {
				child, ok, err := next()
				if err != nil {
					return nil, err
				}
				if !ok {
					return a, nil
				}
				v, err := value(child)
				if err != nil {
					return nil, err
				}
				a = append(a, v)
			}
		case "dict":
			m := map[string]any{}
			for {
				k, ok, err := next()
				if err != nil {
					return nil, err
				}
				if !ok {
					return m, nil
				}
				if k.Name.Local != "key" {
					return nil, fmt.Errorf("<%s> where a <key> belongs", k.Name.Local)
				}
				key, err := value(k)
				if err != nil {
					return nil, err
				}
				if _, dup := m[key.(string)]; dup {
					return nil, fmt.Errorf("key %q twice", key)
				}
				v, ok, err := next()
				if err != nil || !ok {
					return nil, fmt.Errorf("key %q without a value: %v", key, err)
				}
				if m[key.(string)], err = value(v); err != nil {
					return nil, err
				}
			}
		}
		return nil, fmt.Errorf("unexpected <%s>", el.Name.Local)
	}
	root, ok, err := next()
	if err != nil || !ok || root.Name.Local != "plist" || len(root.Attr) != 1 || root.Attr[0].Value != "1.0" {
		t.Fatalf("no <plist version=\"1.0\"> (%v):\n%s", err, doc)
	}
	top, ok, err := next()
	if err != nil || !ok || top.Name.Local != "dict" {
		t.Fatalf("plist does not hold a dict (%v):\n%s", err, doc)
	}
	v, err := value(top)
	if err != nil {
		t.Fatalf("parsing the plist: %v\n%s", err, doc)
	}
	if _, more, err := next(); more || err != nil {
		t.Fatalf("more than one value in the plist (%v):\n%s", err, doc)
	}
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("after </plist>: %v", err)
		}
		if c, ok := tok.(xml.CharData); !ok || strings.TrimSpace(string(c)) != "" {
			t.Fatalf("after </plist>: %#v", tok)
		}
	}
	return v
}

// checkWithPlistlib parses doc with python3's plistlib, where python3 is
// installed, and compares it with what decodePlist made of it.
func checkWithPlistlib(t *testing.T, doc string, decoded any) {
	t.Helper()
	python, err := exec.LookPath("python3")
	if err != nil {
		t.Log("python3 not installed: profile not checked with plistlib")
		return
	}
	cmd := exec.CommandContext(t.Context(), python, "-c",
		`import json, plistlib, sys; v = plistlib.loads(sys.stdin.buffer.read(), fmt=plistlib.FMT_XML); json.dump(v, sys.stdout)`)
	cmd.Stdin = strings.NewReader(doc)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("plistlib cannot read the profile: %v\n%s", err, stderr.String())
	}
	var fromPython, fromGo any
	if err := json.Unmarshal(out, &fromPython); err != nil {
		t.Fatal(err)
	}
	ours, err := json.Marshal(decoded)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(ours, &fromGo); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(fromPython, fromGo) {
		t.Errorf("plistlib reads\n%s\nbut the Go decoder\n%s", out, ours)
	}
}
