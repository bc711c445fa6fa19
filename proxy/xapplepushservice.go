package proxy

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/xapsproxy/xapsproxy/internal/imapwire"
	"github.com/xapsproxy/xapsproxy/store"
)

// Limits on what a device may register.
const (
	maxMailboxes     = 1000
	maxNesting       = 8
	maxIDFields      = 30 // RFC 2971 section 3.3
	maxAccountIDLen  = 256
	maxMailboxLen    = 1024
	defaultSubtopic  = "com.apple.mobilemail"
	deviceTokenBytes = 32
)

// xapsRequest is a parsed XAPPLEPUSHSERVICE command.
type xapsRequest struct {
	version   string
	accountID string
	token     string
	subtopic  string
	mailboxes []string
}

// handleXAPPLEPUSHSERVICE answers the command itself (PROTOCOL: it is never
// forwarded). The registration is stored before the tagged OK is sent, so an
// acknowledged registration is never lost.
func (s *session) handleXAPPLEPUSHSERVICE(ctx context.Context, tag string, rest []byte) error {
	if err := s.waitDrained(); err != nil {
		return err
	}
	authenticated, user := s.authState()
	if !authenticated {
		s.srv.stats.registrationsBad.Add(1)
		return s.refuse(tag, rest, "BAD XAPPLEPUSHSERVICE is only valid after login")
	}
	d := imapwire.NewDecoder(rest, s.cr)
	d.MaxLiteral = maxXAPSLiteral
	d.Budget = maxLineLength
	d.CheckLiteral = s.continueLiteral
	values, mailboxes, err := parseXAPS(d)
	if err != nil {
		s.srv.stats.registrationsBad.Add(1)
		return s.refuseParsed(tag, "XAPPLEPUSHSERVICE", d, err)
	}
	req, err := validateXAPS(values, mailboxes)
	if err != nil {
		s.srv.stats.registrationsBad.Add(1)
		return s.writeClient(tag + " BAD XAPPLEPUSHSERVICE " + oneLine(err.Error()) + "\r\n")
	}
	if user == "" {
		s.srv.stats.registrationsBad.Add(1)
		return s.writeClient(tag + " NO XAPPLEPUSHSERVICE cannot tell which user this session belongs to (log in with LOGIN or AUTHENTICATE PLAIN)\r\n")
	}
	if !utf8.ValidString(user) {
		// PostgreSQL's text takes UTF-8 only; one rule for both stores.
		s.srv.stats.registrationsBad.Add(1)
		return s.writeClient(tag + " NO [CANNOT] XAPPLEPUSHSERVICE the user name is not UTF-8; push cannot be registered for it\r\n")
	}

	now := s.srv.opts.Now()
	reg := store.Registration{
		User:        user,
		DeviceToken: req.token,
		AccountID:   req.accountID,
		Subtopic:    req.subtopic,
		Mailboxes:   req.mailboxes,
		Version:     int(req.version[0] - '0'),
		Topic:       s.srv.opts.Topic,
		Registered:  now,
		Renewed:     now,
	}
	rctx, cancel := context.WithTimeout(ctx, registerTimeout)
	err = s.srv.opts.Register(rctx, reg)
	cancel()
	log := s.log.With("user", user, "token", store.ShortToken(req.token), "account", req.accountID)
	switch {
	case errors.Is(err, store.ErrLimit):
		s.srv.stats.registrationsLimit.Add(1)
		log.Warn("registration refused: too many devices", "limit", store.MaxRegistrationsPerUser)
		return s.writeClient(tag + " NO [LIMIT] XAPPLEPUSHSERVICE too many devices are registered for this account\r\n")
	case err != nil:
		s.srv.stats.registrationsError.Add(1)
		log.Error("registration not stored", "err", err)
		return s.writeClient(tag + " NO [UNAVAILABLE] XAPPLEPUSHSERVICE registration could not be stored, try again later\r\n")
	}
	s.srv.stats.registrationsOK.Add(1)
	log.Info("device registered", "version", req.version, "mailboxes", len(req.mailboxes))
	return s.writeClient(xapsReply(tag, req, s.srv.opts.Topic))
}

// xapsReply is the answer to a stored registration, as Apple's own server
// gave it: one "* XAPPLEPUSHSERVICE "mailbox" NAME" line per mailbox the
// registration covers (INBOX for version 1), then the version and topic,
// then the tagged OK. Names go out as the device sent them (INBOX
// canonical), quoted, or as a literal when a quoted string cannot carry them.
func xapsReply(tag string, req xapsRequest, topic string) string {
	var b strings.Builder
	for _, m := range req.mailboxes {
		b.WriteString(`* XAPPLEPUSHSERVICE "mailbox" ` + imapwire.String(m) + "\r\n")
	}
	fmt.Fprintf(&b, "* XAPPLEPUSHSERVICE aps-version %s aps-topic %s\r\n%s OK XAPPLEPUSHSERVICE completed.\r\n",
		imapwire.Quote(req.version), imapwire.Quote(topic), tag)
	return b.String()
}

// parseXAPS reads the arguments: space-separated key/value pairs, every key
// and value an astring, keys in any order and case; "mailboxes" takes a
// parenthesised list (PROTOCOL.md). Unknown keys are skipped whatever their
// value; NIL counts as absent; a key given twice must carry the same value.
func parseXAPS(d *imapwire.Decoder) (values map[string]string, mailboxes []string, err error) {
	values = make(map[string]string)
	for !d.AtEOL() && d.SP() {
		key, isNil, ok := d.NString()
		if !ok || !d.SP() {
			break
		}
		if isNil {
			return nil, nil, &imapwire.SyntaxError{Msg: "NIL is not a key"}
		}
		key = strings.ToLower(key)
		switch {
		case key == "mailboxes" && d.Is('('):
			d.List(func() bool {
				if len(mailboxes) >= maxMailboxes {
					d.Expect(')', fmt.Sprintf("at most %d mailboxes", maxMailboxes))
					return false
				}
				name, isNil, ok := d.NString()
				if ok && !isNil {
					mailboxes = append(mailboxes, name)
				}
				return ok
			})
		case key == "mailboxes":
			// NIL, or a single name instead of a list.
			if name, isNil, ok := d.NString(); ok && !isNil {
				mailboxes = append(mailboxes, name)
			}
		case !strings.HasPrefix(key, "aps-") || d.Is('('):
			skipValue(d, 0)
		default:
			val, isNil, ok := d.NString()
			if !ok || isNil {
				continue
			}
			if old, dup := values[key]; dup && old != val {
				return nil, nil, &imapwire.SyntaxError{Msg: "gives " + key + " twice with different values"}
			}
			values[key] = val
		}
	}
	d.CRLF()
	return values, mailboxes, d.Err()
}

// skipValue reads a value of an unknown key: a string, NIL or a list, nested
// up to maxNesting deep.
func skipValue(d *imapwire.Decoder, depth int) bool {
	if d.Is('(') {
		if depth >= maxNesting {
			return d.Expect(')', fmt.Sprintf("lists nested at most %d deep", maxNesting))
		}
		return d.List(func() bool { return skipValue(d, depth+1) })
	}
	_, _, ok := d.NString()
	return ok
}

func validateXAPS(values map[string]string, mailboxes []string) (xapsRequest, error) {
	bad := func(format string, args ...any) (xapsRequest, error) {
		return xapsRequest{}, &imapwire.SyntaxError{Msg: fmt.Sprintf(format, args...)}
	}
	req := xapsRequest{
		version:   values["aps-version"],
		accountID: values["aps-account-id"],
		token:     store.NormalizeToken(values["aps-device-token"]),
		subtopic:  values["aps-subtopic"],
	}
	switch req.version {
	case "1", "2":
	case "":
		return bad("needs aps-version")
	default:
		return bad("aps-version %q is not supported (1 or 2)", req.version)
	}
	if req.accountID == "" {
		return bad("needs aps-account-id")
	}
	if len(req.accountID) > maxAccountIDLen || !printable(req.accountID) {
		return bad("aps-account-id is not a valid account id")
	}
	if req.token == "" {
		return bad("needs aps-device-token")
	}
	if !isHex(req.token, 2*deviceTokenBytes) {
		return bad("aps-device-token must be %d hex digits", 2*deviceTokenBytes)
	}
	if req.subtopic == "" {
		req.subtopic = defaultSubtopic
	}
	if !printable(req.subtopic) || len(req.subtopic) > maxAccountIDLen {
		return bad("aps-subtopic is not valid")
	}
	if req.version == "1" || len(mailboxes) == 0 {
		// Version 1 has no mailbox list and means INBOX; so does a v2
		// registration that omits the list or gives none.
		mailboxes = []string{"INBOX"}
	}
	if len(mailboxes) > maxMailboxes {
		return bad("registers more than %d mailboxes", maxMailboxes)
	}
	seen := make(map[string]bool, len(mailboxes))
	for _, m := range mailboxes {
		if m == "" || len(m) > maxMailboxLen || strings.ContainsAny(m, "\r\n\x00") || !utf8.ValidString(m) {
			return bad("mailbox name %q is not valid", m)
		}
		if strings.EqualFold(m, "INBOX") {
			m = "INBOX"
		}
		if !seen[m] {
			seen[m] = true
			req.mailboxes = append(req.mailboxes, m)
		}
	}
	return req, nil
}

func isHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] == 0x7f {
			return false
		}
	}
	return true
}

// oneLine keeps a reason fit for a response line.
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 {
			return ' '
		}
		return r
	}, s)
}
