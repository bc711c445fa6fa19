package proxy

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// refServer is a small IMAP server for the session fuzz target. It reads the
// stream the way an IMAP server does, with framing code of its own (not
// imapwire's): lines, {N} and {N+} literals anywhere a line ends, IDLE and
// AUTHENTICATE continuations. It logs users in and records what reached it,
// so the fuzz target can compare the proxy's idea of the session with the
// server's.
type refServer struct {
	ln    net.Listener
	conns chan *refConn
}

// refConn is what one backend connection saw.
type refConn struct {
	done chan struct{}

	mu        sync.Mutex
	user      string   // the user it logged in, "" before
	commands  []string // command names, upper case, in order
	forbidden []string // what the proxy must never forward, as received
}

var refUsers = map[string]string{"alice": "alicepw", "bob": "bobpw"}

func startRefServer() (*refServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &refServer{ln: ln, conns: make(chan *refConn, 1)}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			rc := &refConn{done: make(chan struct{})}
			s.conns <- rc
			go func() {
				defer close(rc.done)
				defer c.Close()
				rc.serve(c)
			}()
		}
	}()
	return s, nil
}

func (rc *refConn) state() (user string, commands, forbidden []string) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.user, append([]string(nil), rc.commands...), append([]string(nil), rc.forbidden...)
}

var refLiteralStart = regexp.MustCompile(`^~?\{([0-9]{1,9})\+?\}\r?\n`)

var (
	refSetmetadataName   = regexp.MustCompile(`(?i)^(\S+) SETMETADATA \S+ \(([^ ()]+)`)
	refAppendFlagLiteral = regexp.MustCompile(`(?i)^\S+ APPEND \S+ \([^)"]*\{[0-9]*\+?\}\r?\n$`)
)

// refLine reads one line, at most 64 KiB.
func refLine(r *bufio.Reader) (string, error) {
	var sb strings.Builder
	for {
		b, err := r.ReadByte()
		if err != nil {
			return "", err
		}
		sb.WriteByte(b)
		if b == '\n' {
			return sb.String(), nil
		}
		if sb.Len() > 64<<10 {
			return "", fmt.Errorf("line too long")
		}
	}
}

// refCommand reads a whole command: its lines and literals, lexed as
// Dovecot does: a literal starts at any "{" outside a quoted string, a
// synchronizing one gets "+ OK" as soon as its "}" is read (those over
// 4 KiB a NO instead, and the command ends there), and only then must the
// line end ("Missing LF after literal size" otherwise); "{}" is a literal of
// size 0, and sizes may have any number of digits. Non-synchronizing
// literals are read as they come (LITERAL+).
//
// Two of Dovecot's commands do not follow that pattern, and are modelled:
//
//   - SETMETADATA answers an entry name outside /private and /shared with a
//     tagged BAD at once, and then goes on reading the command's entries:
//     a literal in a name's place gets "+ OK" (on a long line Dovecot parses
//     in several reads, so it comes well after the BAD: modelled as a short
//     pause) and its data is read; one in a value's place ends the command
//     there, unasked. The command also ends at a line without a literal,
//     and gets no other reply (answered reports that).
//   - APPEND reads a literal inside its flag list as a size only: it asks
//     for nothing and takes what follows as more arguments, so it waits for
//     ever (the client never gets a "+").
func refCommand(r *bufio.Reader, w io.Writer) (text, verdict string, answered bool, err error) {
	var sb strings.Builder
	entries := 0 // after an early BAD: the entry names and values read so far
	for first := true; ; first = false {
		line, err := refLine(r)
		if err != nil {
			return "", "", false, err
		}
		sb.WriteString(line)
		if first {
			if m := refSetmetadataName.FindStringSubmatch(line); m != nil &&
				!strings.HasPrefix(strings.ToLower(m[2]), "/private") && !strings.HasPrefix(strings.ToLower(m[2]), "/shared") {
				fmt.Fprintf(w, "%s BAD Error in IMAP command SETMETADATA: Entry name must begin with /private or /shared\r\n", m[1])
				answered = true
			}
			if refAppendFlagLiteral.MatchString(line) {
				for {
					if _, err := refLine(r); err != nil {
						return "", "", false, err
					}
				}
			}
		}
		size, nonSync, end, found := refFindLiteral(line)
		if !found {
			return sb.String(), "", answered, nil
		}
		if answered {
			head := line[:strings.LastIndexByte(line[:end], '{')]
			if first {
				_, head, _ = strings.Cut(head, "(")
			}
			if entries += refTokens(head); entries%2 == 1 {
				return sb.String(), "", true, nil // a value: the command ends here
			}
			entries++ // the literal, a name
		}
		if !nonSync {
			if size > 4096 && !answered {
				return sb.String(), "NO [TOOBIG] Literal too large", false, nil
			}
			if answered {
				time.Sleep(3 * time.Millisecond)
			}
			io.WriteString(w, "+ OK\r\n")
		}
		if rest := line[end:]; rest != "\r\n" && rest != "\n" {
			if answered {
				return sb.String(), "", true, nil
			}
			return sb.String(), "BAD Missing LF after literal size", false, nil
		}
		data := make([]byte, size)
		if _, err := io.ReadFull(r, data); err != nil {
			return "", "", false, err
		}
		sb.Write(data)
	}
}

// refTokens counts the atoms and quoted strings in s.
func refTokens(s string) int {
	n, in, quoted := 0, false, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quoted && c == '\\':
			i++
		case quoted && c == '"':
			quoted = false
		case quoted:
		case c == ' ' || c == '\r' || c == '\n':
			in = false
		case !in:
			n++
			in = true
			quoted = c == '"'
		case c == '"':
			quoted = true
		}
	}
	return n
}

// refFindLiteral finds the first literal header outside a quoted string:
// its size, whether it is non-synchronizing, and where it ends.
func refFindLiteral(line string) (size int, nonSync bool, end int, found bool) {
	quoted := false
	for i := 0; i < len(line); i++ {
		switch c := line[i]; {
		case quoted && c == '\\':
			i++
		case c == '"':
			quoted = !quoted
		case c == '{' && !quoted:
			j := i + 1
			for j < len(line) && line[j] >= '0' && line[j] <= '9' {
				size = min(size*10+int(line[j]-'0'), 1<<30)
				j++
			}
			if j < len(line) && line[j] == '+' {
				nonSync = true
				j++
			}
			if j < len(line) && line[j] == '}' {
				return size, nonSync, j + 1, true
			}
			return 0, false, 0, false // Dovecot: a BAD, no literal
		}
	}
	return 0, false, 0, false
}

func (rc *refConn) serve(c net.Conn) {
	r := bufio.NewReader(c)
	w := c
	io.WriteString(w, "* OK [CAPABILITY IMAP4rev1 SASL-IR ID IDLE LITERAL+ AUTH=PLAIN AUTH=LOGIN] ref ready\r\n")
	reply := func(format string, args ...any) { fmt.Fprintf(w, format+"\r\n", args...) }
	for {
		cmd, verdict, answered, err := refCommand(r, w)
		if err != nil {
			return
		}
		tag, rest, _ := strings.Cut(strings.TrimRight(cmd, "\r\n"), " ")
		name, args, _ := strings.Cut(rest, " ")
		name = strings.ToUpper(name)
		rc.mu.Lock()
		rc.commands = append(rc.commands, name)
		user := rc.user
		switch name {
		case "XAPPLEPUSHSERVICE", "STARTTLS", "COMPRESS", "XCLIENT", "UNAUTHENTICATE":
			rc.forbidden = append(rc.forbidden, cmd)
		case "ID":
			if refIDHasXField(args) && tag != "xaps1" {
				rc.forbidden = append(rc.forbidden, cmd)
			}
		}
		rc.mu.Unlock()
		switch {
		case answered:
		case verdict != "":
			reply("%s %s", tag, verdict)
		case name == "LOGOUT":
			reply("* BYE Logging out")
			reply("%s OK Logout completed.", tag)
			return
		case name == "LOGIN" && user == "":
			rc.login(tag, refLoginArgs(args), "", reply)
		case name == "AUTHENTICATE" && user == "":
			if !rc.authenticate(tag, args, r, w, reply) {
				return
			}
		case name == "IDLE" && user != "":
			reply("+ idling")
			line, err := refLine(r)
			if err != nil {
				return
			}
			if strings.EqualFold(strings.TrimRight(line, "\r\n"), "DONE") {
				reply("%s OK Idle completed.", tag)
			} else {
				reply("%s BAD Expected DONE.", tag)
			}
		case user == "" && name != "CAPABILITY" && name != "NOOP" && name != "ID":
			reply("%s BAD Error in IMAP command %s: Unknown command.", tag, name)
		default:
			reply("%s OK %s completed.", tag, name)
		}
	}
}

// login checks a user name and password, the name as Dovecot normalises it;
// authzid is SASL's authorization identity, "" if none. A master-user login
// (a name with the separator, or an authzid for another user) is recorded
// as forbidden: the proxy must refuse those itself.
func (rc *refConn) login(tag string, creds []string, authzid string, reply func(string, ...any)) {
	if len(creds) > 0 && strings.Contains(creds[0]+authzid, "*") || authzid != "" && len(creds) > 0 && authzid != creds[0] {
		rc.mu.Lock()
		rc.forbidden = append(rc.forbidden, fmt.Sprintf("master-user login %q as %q", creds[0], authzid))
		rc.mu.Unlock()
	}
	// Dovecot's default auth_username_format, %Lu: the user is the name in
	// lower case.
	if len(creds) == 2 && refUsers[strings.ToLower(creds[0])] == creds[1] && creds[1] != "" {
		rc.mu.Lock()
		rc.user = strings.ToLower(creds[0])
		rc.mu.Unlock()
		reply("%s OK [CAPABILITY IMAP4rev1 IDLE LITERAL+ METADATA] Logged in", tag)
		return
	}
	reply("%s NO [AUTHENTICATIONFAILED] Authentication failed.", tag)
}

// refLoginArgs splits LOGIN's two astrings, roughly (atoms, quoted strings
// with escapes, literals already inlined by refCommand).
func refLoginArgs(args string) []string {
	var out []string
	s := strings.TrimRight(args, "\r\n")
	for len(s) > 0 && len(out) < 3 {
		s = strings.TrimLeft(s, " ")
		switch {
		case strings.HasPrefix(s, `"`):
			var sb strings.Builder
			i := 1
			for ; i < len(s) && s[i] != '"'; i++ {
				if s[i] == '\\' && i+1 < len(s) {
					i++
				}
				sb.WriteByte(s[i])
			}
			out, s = append(out, sb.String()), s[min(i+1, len(s)):]
		case strings.HasPrefix(s, "{") || strings.HasPrefix(s, "~{"):
			m := refLiteralStart.FindStringSubmatch(s)
			if m == nil {
				return nil
			}
			n, _ := strconv.Atoi(m[1])
			s = s[len(m[0]):]
			if n > len(s) {
				return nil
			}
			out, s = append(out, s[:n]), s[n:]
		default:
			word, more, _ := strings.Cut(s, " ")
			out, s = append(out, word), more
		}
	}
	return out
}

// authenticate runs PLAIN or LOGIN; it returns false if the connection broke.
func (rc *refConn) authenticate(tag, args string, r *bufio.Reader, w io.Writer, reply func(string, ...any)) bool {
	fields := strings.Fields(args)
	if len(fields) == 0 {
		reply("%s BAD Missing mechanism.", tag)
		return true
	}
	mech := strings.ToUpper(fields[0])
	respond := func(challenge string) (string, bool, bool) {
		reply("+ %s", challenge)
		line, err := refLine(r)
		if err != nil {
			return "", false, false
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "*" {
			reply("%s BAD Authentication aborted by client.", tag)
			return "", false, true
		}
		dec, err := base64.StdEncoding.DecodeString(line)
		if err != nil {
			reply("%s BAD Invalid base64 data in continued response", tag)
			return "", false, true
		}
		return string(dec), true, true
	}
	var user, pass, authzid string
	switch mech {
	case "PLAIN":
		var resp string
		if len(fields) > 1 {
			dec, err := base64.StdEncoding.DecodeString(fields[1])
			if err != nil {
				reply("%s BAD Invalid base64 data in initial response", tag)
				return true
			}
			resp = string(dec)
		} else {
			var ok, alive bool
			if resp, ok, alive = respond(""); !ok {
				return alive
			}
		}
		parts := bytes.SplitN([]byte(resp), []byte{0}, 3)
		if len(parts) == 3 {
			authzid, user, pass = string(parts[0]), string(parts[1]), string(parts[2])
		}
	case "LOGIN":
		var ok, alive bool
		if user, ok, alive = respond("VXNlcm5hbWU6"); !ok {
			return alive
		}
		if pass, ok, alive = respond("UGFzc3dvcmQ6"); !ok {
			return alive
		}
	default:
		reply("%s NO Unsupported authentication mechanism.", tag)
		return true
	}
	rc.login(tag, []string{user, pass}, authzid, reply)
	return true
}

// refIDHasXField reports whether an ID command's arguments (a list of
// quoted strings and NILs, as the proxy sends them, or anything a client
// might get through) have a key starting "x-".
func refIDHasXField(args string) bool {
	var items []string
	for i := 0; i < len(args); i++ {
		switch {
		case args[i] == '"':
			var sb strings.Builder
			for i++; i < len(args) && args[i] != '"'; i++ {
				if args[i] == '\\' && i+1 < len(args) {
					i++
				}
				sb.WriteByte(args[i])
			}
			items = append(items, sb.String())
		case strings.HasPrefix(strings.ToUpper(args[i:]), "NIL"):
			items = append(items, "")
			i += 2
		case args[i] == '{' || args[i] > ' ' && args[i] != '(' && args[i] != ')':
			return true // anything but quoted strings: not what the proxy sends
		}
	}
	for k := 0; k < len(items); k += 2 {
		if strings.HasPrefix(strings.ToLower(items[k]), "x-") {
			return true
		}
	}
	return false
}
