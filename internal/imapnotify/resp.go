package imapnotify

import (
	"bytes"
	"errors"
	"strconv"
	"strings"

	"github.com/xapsproxy/xapsproxy/internal/imapwire"
)

// resp is one server response, split into what the client looks at.
type resp struct {
	tag    string // "*" untagged, "+" continuation request, else a command's tag
	num    uint32 // the number of "* 3 EXISTS" and the like
	hasNum bool
	kind   string // upper case: OK, NO, BAD, BYE, PREAUTH, CAPABILITY, STATUS, LIST, EXISTS...
	// Status responses only:
	code    string // response code name, upper case; "" if none
	codeArg string // what follows the code name inside the brackets
	text    string
	// data is what follows kind and a space, up to and including the line
	// end: the arguments of STATUS, LIST, CAPABILITY, ENABLED (with any
	// literals inline).
	data []byte
}

var errSyntax = errors.New("malformed response")

func isStatusKind(k string) bool {
	switch k {
	case "OK", "NO", "BAD", "BYE", "PREAUTH":
		return true
	}
	return false
}

// parseResp splits a response read by readWhole.
func parseResp(b []byte) (*resp, error) {
	line := imapwire.TrimCRLF(b)
	if len(line) == 0 {
		return nil, errSyntax
	}
	r := &resp{}
	if line[0] == '+' {
		r.tag = "+"
		r.text = string(bytes.TrimPrefix(line[1:], []byte(" ")))
		return r, nil
	}
	tag, rest, ok := bytes.Cut(line, []byte(" "))
	if !ok || len(tag) == 0 {
		return nil, errSyntax
	}
	r.tag = string(tag)
	if r.tag == "*" && len(rest) > 0 && rest[0] >= '0' && rest[0] <= '9' {
		num, after, ok := bytes.Cut(rest, []byte(" "))
		if !ok {
			return nil, errSyntax
		}
		n, err := strconv.ParseUint(string(num), 10, 32)
		if err != nil {
			return nil, errSyntax
		}
		r.num, r.hasNum = uint32(n), true
		rest = after
	}
	kind := rest
	if i := bytes.IndexByte(rest, ' '); i >= 0 {
		kind = rest[:i]
		// The original bytes from there on, literals and line end included.
		r.data = b[len(line)-len(rest)+i+1:]
	}
	if len(kind) == 0 {
		return nil, errSyntax
	}
	r.kind = strings.ToUpper(string(kind))
	if r.tag != "*" && !isStatusKind(r.kind) {
		return nil, errSyntax
	}
	if isStatusKind(r.kind) {
		parseStatusText(r, imapwire.TrimCRLF(r.data))
		r.data = nil
	}
	return r, nil
}

// parseStatusText reads resp-text: an optional [CODE args] and free text.
func parseStatusText(r *resp, text []byte) {
	if len(text) > 0 && text[0] == '[' {
		if end := bytes.IndexByte(text, ']'); end > 0 {
			code := text[1:end]
			name, arg, _ := bytes.Cut(code, []byte(" "))
			r.code = strings.ToUpper(string(name))
			r.codeArg = string(arg)
			text = bytes.TrimPrefix(text[end+1:], []byte(" "))
		}
	}
	r.text = string(text)
}

// words splits a space-separated list of atoms (capabilities, ENABLED),
// in upper case.
func words(s string) []string {
	f := strings.Fields(s)
	for i := range f {
		f[i] = strings.ToUpper(f[i])
	}
	return f
}

// Fields of a STATUS response, as bits of statusVals.have.
const (
	haveMessages = 1 << iota
	haveUIDNext
	haveUIDValidity
	haveUnseen
	haveModSeq
)

// statusVals are the values of a STATUS response the client uses.
type statusVals struct {
	have        uint8
	messages    uint32
	uidNext     uint32
	uidValidity uint32
	unseen      uint32
	modSeq      uint64
}

// merge sets in v every value present in n.
func (v *statusVals) merge(n statusVals) {
	if n.have&haveMessages != 0 {
		v.messages = n.messages
	}
	if n.have&haveUIDNext != 0 {
		v.uidNext = n.uidNext
	}
	if n.have&haveUIDValidity != 0 {
		v.uidValidity = n.uidValidity
	}
	if n.have&haveUnseen != 0 {
		v.unseen = n.unseen
	}
	if n.have&haveModSeq != 0 {
		v.modSeq = n.modSeq
	}
	v.have |= n.have
}

// parseStatus reads the data of a STATUS response: mailbox SP "(" [att SP
// value *(SP att SP value)] ")". Values of attributes it does not use may
// be any atom (APPENDLIMIT can be NIL). If the mailbox name was read, it is
// returned even when the rest is malformed.
func parseStatus(data []byte) (name string, v statusVals, err error) {
	d := imapwire.NewDecoder(data, nil)
	d.MaxLiteral = int64(len(data))
	name, ok := d.AString()
	if !ok {
		return "", v, errSyntax
	}
	ok = d.SP() && d.List(func() bool {
		att, ok := d.Atom()
		if !ok || !d.SP() {
			return false
		}
		val, ok := d.Atom()
		if !ok {
			return false
		}
		var bit uint8
		var dst *uint32
		switch strings.ToUpper(att) {
		case "MESSAGES":
			bit, dst = haveMessages, &v.messages
		case "UIDNEXT":
			bit, dst = haveUIDNext, &v.uidNext
		case "UIDVALIDITY":
			bit, dst = haveUIDValidity, &v.uidValidity
		case "UNSEEN":
			bit, dst = haveUnseen, &v.unseen
		case "HIGHESTMODSEQ":
			n, err := strconv.ParseUint(val, 10, 64)
			if err != nil {
				return false
			}
			v.modSeq, v.have = n, v.have|haveModSeq
			return true
		default:
			return true
		}
		n, err := strconv.ParseUint(val, 10, 32)
		if err != nil {
			return false
		}
		*dst, v.have = uint32(n), v.have|bit
		return true
	}) && d.CRLF()
	if !ok {
		return name, statusVals{}, errSyntax
	}
	return name, v, nil
}

// listVals is what the client uses of a LIST response.
type listVals struct {
	nonExistent bool
	oldName     string // RFC 5465 OLDNAME: the mailbox's name before a rename
	hasOldName  bool
}

// parseList reads the data of a LIST response: "(" flags ")" SP delimiter
// SP mailbox [SP "(" extended items ")"] (RFC 5258, RFC 5465 section 5.4).
func parseList(data []byte) (name string, v listVals, err error) {
	d := imapwire.NewDecoder(data, nil)
	d.MaxLiteral = int64(len(data))
	ok := d.List(func() bool {
		d.Special('\\')
		flag, ok := d.Atom()
		if strings.EqualFold(flag, "NonExistent") {
			v.nonExistent = true
		}
		return ok
	}) && d.SP()
	if ok {
		_, _, ok = d.NString() // the hierarchy delimiter, or NIL
	}
	if ok = ok && d.SP(); ok {
		name, ok = d.AString()
	}
	if ok && !d.AtEOL() {
		ok = d.SP() && d.List(func() bool {
			tag, ok := d.AString()
			if !ok || !d.SP() {
				return false
			}
			first, isString, ok := extValue(d, 0)
			if ok && isString && strings.EqualFold(tag, "OLDNAME") {
				v.oldName, v.hasOldName = first, true
			}
			return ok
		})
	}
	if !ok || !d.CRLF() {
		return name, listVals{}, errSyntax
	}
	return name, v, nil
}

// extValue reads a tagged-ext-val (RFC 4466): a string, a number or a
// parenthesised list of them, nested at most a few deep; it returns the
// first string met.
func extValue(d *imapwire.Decoder, depth int) (first string, isString bool, ok bool) {
	if !d.Is('(') {
		s, ok := d.AString()
		return s, ok, ok
	}
	if depth > 4 {
		return "", false, false
	}
	ok = d.List(func() bool {
		s, str, ok := extValue(d, depth+1)
		if ok && str && !isString {
			first, isString = s, true
		}
		return ok
	})
	return first, isString, ok
}
