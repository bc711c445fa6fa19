package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"unicode"
)

// mobileconfigCmd writes an Apple configuration profile that adds one IMAP
// account, pointed at the proxy, to iPhone or iPad Mail. The profile holds
// no password: the phone asks for it when the profile is installed.
func mobileconfigCmd(_ context.Context, args []string, stdout io.Writer) error {
	fs := newFlags("mobileconfig")
	var p mailProfile
	fs.StringVar(&p.User, "user", "", "IMAP and SMTP user name (required)")
	fs.StringVar(&p.Email, "email", "", "e-mail address (default: -user if it contains @)")
	fs.StringVar(&p.Host, "host", "", "the proxy's public host name, as in its TLS certificate (required)")
	fs.IntVar(&p.Port, "port", 993, "the proxy's IMAPS port")
	fs.StringVar(&p.SMTPHost, "smtp-host", "", "outgoing (SMTP) server (default: -host)")
	fs.IntVar(&p.SMTPPort, "smtp-port", 587, "outgoing (SMTP) server port")
	fs.StringVar(&p.Description, "description", "", "account name shown in Mail (default: the e-mail address)")
	fs.StringVar(&p.Organization, "org", "", "organization shown with the profile (optional)")
	out := fs.String("o", "", "write the profile to this file instead of stdout")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("mobileconfig: unexpected argument %q", fs.Arg(0))
	}
	data, err := p.build()
	if err != nil {
		return fmt.Errorf("mobileconfig: %w", err)
	}
	if *out == "" {
		_, err = stdout.Write(data)
		return err
	}
	if err := os.WriteFile(*out, data, 0o644); err != nil {
		return fmt.Errorf("mobileconfig: %w", err)
	}
	return nil
}

// mailProfile is what goes into the profile.
type mailProfile struct {
	User, Email, Host, SMTPHost string
	Port, SMTPPort              int
	Description, Organization   string
}

// check fills in defaults and rejects values the phone could not use.
func (p *mailProfile) check() error {
	p.Host = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(p.Host)), ".")
	p.SMTPHost = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(p.SMTPHost)), ".")
	p.Email = strings.TrimSpace(p.Email)
	switch {
	case strings.TrimSpace(p.User) == "":
		return errors.New("-user is required (the user name Mail logs in with)")
	case p.Host == "":
		return errors.New("-host is required (the proxy's public host name, as in its TLS certificate)")
	}
	if p.Email == "" {
		if !strings.Contains(p.User, "@") {
			return fmt.Errorf("-email is required: user %q is not an e-mail address", p.User)
		}
		p.Email = p.User
	}
	if p.SMTPHost == "" {
		p.SMTPHost = p.Host
	}
	if p.Description == "" {
		p.Description = p.Email
	}
	for _, h := range []struct{ flag, v string }{{"-host", p.Host}, {"-smtp-host", p.SMTPHost}} {
		if strings.ContainsAny(h.v, " \t/:@") {
			return fmt.Errorf("%s %q is not a host name", h.flag, h.v)
		}
	}
	for _, port := range []struct {
		flag string
		v    int
	}{{"-port", p.Port}, {"-smtp-port", p.SMTPPort}} {
		if port.v < 1 || port.v > 65535 {
			return fmt.Errorf("%s %d is not a port", port.flag, port.v)
		}
	}
	for _, s := range []struct{ flag, v string }{{"-user", p.User}, {"-email", p.Email}, {"-host", p.Host}, {"-smtp-host", p.SMTPHost}, {"-description", p.Description}, {"-org", p.Organization}} {
		if strings.ContainsFunc(s.v, unicode.IsControl) {
			return fmt.Errorf("%s contains a control character", s.flag)
		}
	}
	return nil
}

// identifier is the profile's PayloadIdentifier: the host reversed, then
// ".mail." and the user, so that the profile made again for the same user
// and host replaces the installed one instead of adding a second account.
func (p *mailProfile) identifier() string {
	labels := strings.Split(p.Host, ".")
	slices.Reverse(labels)
	return strings.Join(labels, ".") + ".mail." + p.User
}

// build returns the profile as an XML property list.
func (p *mailProfile) build() ([]byte, error) {
	if err := p.check(); err != nil {
		return nil, err
	}
	profileUUID, err := newUUID()
	if err != nil {
		return nil, err
	}
	accountUUID, err := newUUID()
	if err != nil {
		return nil, err
	}
	id := p.identifier()
	account := plistDict{
		{"PayloadType", "com.apple.mail.managed"},
		{"PayloadVersion", 1},
		{"PayloadIdentifier", id + ".account"},
		{"PayloadUUID", accountUUID},
		{"PayloadDisplayName", "Mail: " + p.Email},
		{"EmailAccountType", "EmailTypeIMAP"},
		{"EmailAccountDescription", p.Description},
		{"EmailAddress", p.Email},
		{"IncomingMailServerHostName", p.Host},
		{"IncomingMailServerPortNumber", p.Port},
		{"IncomingMailServerUseSSL", true},
		{"IncomingMailServerAuthentication", "EmailAuthPassword"},
		{"IncomingMailServerUsername", p.User},
		{"OutgoingMailServerHostName", p.SMTPHost},
		{"OutgoingMailServerPortNumber", p.SMTPPort},
		{"OutgoingMailServerUseSSL", true},
		{"OutgoingMailServerAuthentication", "EmailAuthPassword"},
		{"OutgoingMailServerUsername", p.User},
		{"OutgoingPasswordSameAsIncomingPassword", true},
	}
	profile := plistDict{
		{"PayloadType", "Configuration"},
		{"PayloadVersion", 1},
		{"PayloadIdentifier", id},
		{"PayloadUUID", profileUUID},
		{"PayloadDisplayName", "Mail with push: " + p.Email},
	}
	if p.Organization != "" {
		profile = append(profile, plistEntry{"PayloadOrganization", p.Organization})
	}
	profile = append(profile, plistEntry{"PayloadContent", []plistDict{account}})

	var b bytes.Buffer
	b.WriteString(`<?xml version="1.0" encoding="UTF-8"?>` + "\n")
	b.WriteString(`<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">` + "\n")
	b.WriteString(`<plist version="1.0">` + "\n")
	if err := writePlist(&b, profile, 0); err != nil {
		return nil, err
	}
	b.WriteString("</plist>\n")
	return b.Bytes(), nil
}

// plistDict is a property list dictionary whose keys keep their order.
type plistDict []plistEntry

type plistEntry struct {
	key   string
	value any // string, int, bool, plistDict or []plistDict
}

// writePlist writes v as property list XML, every string escaped.
func writePlist(b *bytes.Buffer, v any, depth int) error {
	indent := strings.Repeat("\t", depth)
	switch v := v.(type) {
	case string:
		b.WriteString(indent + "<string>")
		if err := xml.EscapeText(b, []byte(v)); err != nil {
			return err
		}
		b.WriteString("</string>\n")
	case int:
		b.WriteString(indent + "<integer>" + strconv.Itoa(v) + "</integer>\n")
	case bool:
		if v {
			b.WriteString(indent + "<true/>\n")
		} else {
			b.WriteString(indent + "<false/>\n")
		}
	case plistDict:
		b.WriteString(indent + "<dict>\n")
		for _, e := range v {
			b.WriteString(indent + "\t<key>")
			if err := xml.EscapeText(b, []byte(e.key)); err != nil {
				return err
			}
			b.WriteString("</key>\n")
			if err := writePlist(b, e.value, depth+1); err != nil {
				return err
			}
		}
		b.WriteString(indent + "</dict>\n")
	case []plistDict:
		b.WriteString(indent + "<array>\n")
		for _, d := range v {
			if err := writePlist(b, d, depth+1); err != nil {
				return err
			}
		}
		b.WriteString(indent + "</array>\n")
	default:
		return fmt.Errorf("property list: cannot write %T", v)
	}
	return nil
}

// newUUID returns a random (version 4) UUID in the RFC 4122 text form, upper
// case as Apple writes them.
func newUUID() (string, error) {
	var u [16]byte
	if _, err := rand.Read(u[:]); err != nil {
		return "", err
	}
	u[6] = u[6]&0x0f | 0x40 // version 4
	u[8] = u[8]&0x3f | 0x80 // variant 10
	return fmt.Sprintf("%X-%X-%X-%X-%X", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16]), nil
}
