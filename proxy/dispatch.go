package proxy

import (
	"context"
	"errors"
	"net"
	"strings"

	"github.com/xapsproxy/xapsproxy/internal/imapwire"
)

// forwardedBeforeLogin reports whether a command is forwarded before login:
// besides those the proxy reads itself (LOGIN, AUTHENTICATE, ID) or answers
// (STARTTLS), only RFC 9051's any-state commands. Nothing else reaches the
// backend before login, so its pre-login extensions (XCLIENT from trusted
// networks, for one) stay out of a client's reach.
func forwardedBeforeLogin(name string) bool {
	switch name {
	case "CAPABILITY", "NOOP", "LOGOUT":
		return true
	}
	return false
}

// dispatch handles one command line: answered by the proxy, refused, or
// forwarded. The session's state only ever changes on commands parsed here
// and responses that answer them.
func (s *session) dispatch(ctx context.Context, line []byte) error {
	d := imapwire.NewDecoder(line, nil)
	tag, ok := d.Tag()
	if ok && !validTag(tag) {
		return s.refuse("*", line, "BAD Invalid tag")
	}
	if !ok || !d.SP() {
		// Without a tag nothing can be answered in order; a literal after
		// it could not be skipped safely.
		if hasLiteralSuffix(line) {
			s.bye("Invalid command: no tag")
			return errBadInput
		}
		return s.writeClient("* BAD Invalid command: no tag\r\n")
	}
	name, ok := d.Atom()
	rest := d.Rest()
	if !ok || len(rest) > 0 && rest[0] != ' ' && rest[0] != '\r' && rest[0] != '\n' {
		// The backend might read a name the proxy cannot (or the other way
		// round): never forward what the proxy has not understood.
		return s.refuse(tag, line, "BAD Invalid command name")
	}
	if s.tagInUse(tag) {
		return s.refuse(tag, line, "BAD Tag "+tag+" is already in use by a command in progress")
	}
	if s.loginPending() {
		// Whether the session is logged in decides what comes next
		// (refused before login, or a second login refused after): wait
		// until the backend has said.
		if err := s.waitDrained(); err != nil {
			return err
		}
	}
	authenticated, _ := s.authState()
	name = strings.ToUpper(name)
	switch name {
	case "XAPPLEPUSHSERVICE":
		return s.handleXAPPLEPUSHSERVICE(ctx, tag, rest)
	case "STARTTLS":
		return s.handleSTARTTLS(ctx, tag, rest)
	case "COMPRESS", "UNAUTHENTICATE", "XCLIENT":
		// COMPRESS would hide the stream the proxy reads (RFC 4978),
		// UNAUTHENTICATE undo the login it relies on (RFC 8437), and
		// XCLIENT let a client claim another address.
		return s.refuse(tag, line, "NO "+name+" is not available through this proxy")
	case "ID":
		return s.forwardID(tag, rest)
	case "LOGIN", "AUTHENTICATE":
		if authenticated {
			return s.refuse(tag, line, "BAD Already logged in")
		}
		if name == "LOGIN" {
			return s.handleLogin(tag, rest)
		}
		return s.handleAuthenticate(tag, rest)
	}
	if !authenticated {
		switch {
		case !forwardedBeforeLogin(name):
			return s.refuse(tag, line, "BAD "+name+" is not valid before login")
		case !imapwire.NewDecoder(rest, nil).CRLF():
			return s.refuse(tag, line, "BAD "+name+" takes no arguments")
		}
		// Composed anew: nothing the client wrote reaches the backend
		// before login unless the proxy has read it.
		return s.forward([]byte(tag+" "+name+"\r\n"), &command{tag: tag})
	}
	switch {
	case name == "IDLE":
		return s.handleIdle(line, tag, rest)
	case name == "SETMETADATA":
		return s.handleSetMetadata(line, tag, rest)
	case !forwardedAfterLogin(name):
		return s.refuse(tag, line, "BAD "+name+" is not available through this proxy")
	}
	return s.forward(line, &command{tag: tag})
}

// forwardedAfterLogin reports whether a command is forwarded after login:
// the commands of IMAP4rev1 and IMAP4rev2 (RFC 3501, 9051) and of the
// extensions mail clients use, each answered by exactly one tagged
// response. Others are refused: Dovecot's X-CANCEL, for one, cancels a
// command in flight so that it is never answered, and the proxy would wait
// for that answer for the rest of the session.
func forwardedAfterLogin(name string) bool {
	switch name {
	case "CAPABILITY", "NOOP", "LOGOUT", "ENABLE", "NAMESPACE",
		"SELECT", "EXAMINE", "CREATE", "DELETE", "RENAME", "SUBSCRIBE", "UNSUBSCRIBE",
		"LIST", "LSUB", "XLIST", "STATUS", "APPEND", "CHECK", "CLOSE", "UNSELECT",
		"EXPUNGE", "SEARCH", "ESEARCH", "FETCH", "STORE", "COPY", "MOVE", "REPLACE", "UID",
		"SORT", "THREAD", "NOTIFY", "GETMETADATA",
		"GETQUOTA", "GETQUOTAROOT", "SETQUOTA",
		"GETACL", "SETACL", "DELETEACL", "LISTRIGHTS", "MYRIGHTS",
		"URLFETCH", "GENURLAUTH", "RESETKEY":
		return true
	}
	return false
}

// maxTagLength bounds a tag: real clients use a few characters, and a long
// one would only cost memory for every command in flight.
const maxTagLength = 64

// validTag reports whether the backend reads tag as a tag: no "]", which
// RFC 9051 allows but Dovecot refuses (answering untagged, so the command
// would wait for its response forever), and not too long.
func validTag(tag string) bool {
	return len(tag) <= maxTagLength && !strings.Contains(tag, "]")
}

// errBadInput ends a session whose client sent what cannot be recovered from.
var errBadInput = errors.New("proxy: unrecoverable client input")

// errClosed is returned by waits cut short because the session ended.
var errClosed = net.ErrClosed

// refuse answers a command of the proxy's own without forwarding it: it
// skips the rest of the command (rest is what is left of its first line),
// then answers after the responses to the commands before it.
func (s *session) refuse(tag string, rest []byte, resp string) error {
	if err := s.discard(imapwire.NewDecoder(rest, s.cr)); err != nil {
		return err
	}
	return s.answer(tag, resp)
}

// answer sends a reply of the proxy's own to a command it has read whole,
// after the responses to the commands before it.
func (s *session) answer(tag, resp string) error {
	if err := s.waitDrained(); err != nil {
		return err
	}
	return s.writeClient(tag + " " + resp + "\r\n")
}

// refuseParsed answers a command the proxy failed to parse: a BAD naming
// the problem, after skipping what is left of it. Other errors (the
// connection failed) end the session.
func (s *session) refuseParsed(tag, name string, d *imapwire.Decoder, err error) error {
	var se *imapwire.SyntaxError
	if !errors.As(err, &se) && !errors.Is(err, imapwire.ErrLiteralRefused) {
		return err
	}
	if err := s.discard(d); err != nil {
		return err
	}
	if err := s.waitDrained(); err != nil {
		return err
	}
	reason := err.Error()
	if errors.Is(err, imapwire.ErrLiteralRefused) {
		reason = "literal too large: " + strings.TrimPrefix(reason, imapwire.ErrLiteralRefused.Error()+": ")
	}
	return s.writeClient(tag + " BAD " + name + " " + oneLine(reason) + "\r\n")
}

// discard skips what is left of a command the proxy answers itself. What
// cannot be skipped ends the session with a reason.
func (s *session) discard(d *imapwire.Decoder) error {
	_, err := d.Discard(maxDiscardLiteral)
	switch {
	case errors.Is(err, imapwire.ErrLiteralRefused):
		s.bye("Literal too large")
	case errors.Is(err, imapwire.ErrLineTooLong):
		s.bye("Command line too long")
	}
	return err
}
