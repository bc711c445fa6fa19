package imapwire

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestLiteralSuffix(t *testing.T) {
	t.Parallel()
	tests := []struct {
		line string
		want Literal
		ok   bool
	}{
		{"a APPEND INBOX {12}\r\n", Literal{Size: 12}, true},
		{"a APPEND INBOX {12+}\r\n", Literal{Size: 12, NonSync: true}, true},
		{"a APPEND INBOX ~{0}\r\n", Literal{Size: 0}, true},
		{"a APPEND INBOX ~{7+}", Literal{Size: 7, NonSync: true}, true},
		{"* 1 FETCH (BODY[] {3}\n", Literal{Size: 3}, true},
		{"{5}\r\n", Literal{Size: 5}, true},
		{"a NOOP\r\n", Literal{}, false},
		{"a LOGIN {}\r\n", Literal{}, false},
		{"a LOGIN {+}\r\n", Literal{}, false},
		{"a LOGIN 5}\r\n", Literal{}, false},
		{"a LOGIN {5a}\r\n", Literal{}, false},
		{"a X {99999999999999999999}\r\n", Literal{}, false},
		{"}", Literal{}, false},
		{"", Literal{}, false},
	}
	for _, tt := range tests {
		got, ok := LiteralSuffix([]byte(tt.line))
		if ok != tt.ok || got != tt.want {
			t.Errorf("LiteralSuffix(%q) = %+v, %v; want %+v, %v", tt.line, got, ok, tt.want, tt.ok)
		}
	}
}

func TestReadLine(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("x", 100) + "\r\n"
	br := bufio.NewReaderSize(strings.NewReader("a NOOP\r\n"+long+"tail"), 16)
	line, err := ReadLine(br, nil, 200)
	if err != nil || string(line) != "a NOOP\r\n" {
		t.Fatalf("first line = %q, %v", line, err)
	}
	line, err = ReadLine(br, line, 200)
	if err != nil || string(line) != long {
		t.Fatalf("long line = %q, %v", line, err)
	}
	if _, err = ReadLine(br, nil, 200); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("unterminated line: err = %v, want ErrUnexpectedEOF", err)
	}
	br = bufio.NewReaderSize(strings.NewReader(long), 16)
	if _, err := ReadLine(br, nil, 50); !errors.Is(err, ErrLineTooLong) {
		t.Fatalf("over-long line: err = %v, want ErrLineTooLong", err)
	}
}

func TestCopyLineStreamsLongLines(t *testing.T) {
	t.Parallel()
	// A line far longer than the reader's buffer, with a literal header split
	// across chunk boundaries at every possible offset.
	for pad := 0; pad < 40; pad++ {
		body := "* 1 FETCH (X " + strings.Repeat("y", 50+pad) + " BODY[] {1234+}\r\nrest"
		br := bufio.NewReaderSize(strings.NewReader(body), 16)
		first, err := br.ReadSlice('\n')
		if !errors.Is(err, bufio.ErrBufferFull) {
			t.Fatalf("expected a partial first chunk, got %v", err)
		}
		var out bytes.Buffer
		lit, ok, err := CopyLine(&out, br, first)
		if err != nil || !ok || lit != (Literal{Size: 1234, NonSync: true}) {
			t.Fatalf("pad %d: CopyLine = %+v, %v, %v", pad, lit, ok, err)
		}
		if want := body[:len(body)-len("rest")]; out.String() != want {
			t.Fatalf("pad %d: copied %q, want %q", pad, out.String(), want)
		}
	}
}

func TestDecoder(t *testing.T) {
	t.Parallel()
	in := "tag1 LOGIN \"al\\\"ice\" {6}\r\nse cr\x00 (a NIL \"NIL\") {2+}\r\nxy\r\nnext"
	br := bufio.NewReader(strings.NewReader(in))
	first, _ := br.ReadSlice('\n')
	var lits []Literal
	d := NewDecoder(append([]byte(nil), first...), br)
	d.CheckLiteral = func(l Literal) error { lits = append(lits, l); return nil }
	tag, _ := d.Tag()
	d.SP()
	cmd, _ := d.Atom()
	d.SP()
	user, _ := d.AString()
	d.SP()
	pass, _ := d.AString()
	d.SP()
	var items []string
	var nils int
	d.List(func() bool {
		s, isNil, ok := d.NString()
		if isNil {
			nils++
		} else {
			items = append(items, s)
		}
		return ok
	})
	d.SP()
	bin, _ := d.AString()
	d.CRLF()
	if err := d.Err(); err != nil {
		t.Fatal(err)
	}
	if tag != "tag1" || cmd != "LOGIN" || user != `al"ice` || pass != "se cr\x00" || bin != "xy" {
		t.Errorf("got %q %q %q %q %q", tag, cmd, user, pass, bin)
	}
	if strings.Join(items, ",") != "a,NIL" || nils != 1 {
		t.Errorf("list = %q with %d NIL, want a,NIL (quoted) and 1 NIL", items, nils)
	}
	if len(lits) != 2 || lits[0] != (Literal{Size: 6}) || lits[1] != (Literal{Size: 2, NonSync: true}) {
		t.Errorf("literals seen = %+v", lits)
	}
	rest, _ := io.ReadAll(br)
	if string(rest) != "next" {
		t.Errorf("decoder read past the command: left %q", rest)
	}
}

func TestDecoderErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in, want string
	}{
		{"\"unterminated\r\n", "unterminated quoted string"},
		{"\"bad \\n escape\"\r\n", "bad escape in quoted string"},
		{"(a b\r\n", "expected space"},
		{"{abc}\r\n", "expected literal size"},
		{"{3x}\r\n", "expected }"},
	}
	for _, tt := range tests {
		d := NewDecoder([]byte(tt.in), nil)
		if strings.HasPrefix(tt.in, "(") {
			d.List(func() bool { _, ok := d.AString(); return ok })
		} else {
			d.AString()
		}
		var se *SyntaxError
		if err := d.Err(); !errors.As(err, &se) || se.Msg != tt.want {
			t.Errorf("%q: err = %v, want %q", tt.in, err, tt.want)
		}
	}
}

func TestDecoderLiteralLimitAndDiscard(t *testing.T) {
	t.Parallel()
	t.Run("non-sync literal over the limit is skipped", func(t *testing.T) {
		br := bufio.NewReader(strings.NewReader(strings.Repeat("z", 100) + " more {3+}\r\nabc\r\nb NOOP\r\n"))
		d := NewDecoder([]byte("{100+}\r\n"), br)
		d.MaxLiteral = 10
		if _, ok := d.AString(); ok || !errors.Is(d.Err(), ErrLiteralRefused) {
			t.Fatalf("err = %v, want ErrLiteralRefused", d.Err())
		}
		awaiting, err := d.Discard(1000)
		if err != nil || awaiting {
			t.Fatalf("Discard = %v, %v", awaiting, err)
		}
		rest, _ := io.ReadAll(br)
		if string(rest) != "b NOOP\r\n" {
			t.Fatalf("after Discard: %q", rest)
		}
	})
	t.Run("sync literal is not waited for", func(t *testing.T) {
		br := bufio.NewReader(strings.NewReader("b NOOP\r\n"))
		d := NewDecoder([]byte("x {5}\r\n"), br)
		d.Atom()
		d.SP()
		d.CheckLiteral = func(Literal) error { return ErrLiteralRefused }
		d.AString()
		awaiting, err := d.Discard(1000)
		if err != nil || !awaiting {
			t.Fatalf("Discard = %v, %v; want awaiting", awaiting, err)
		}
		rest, _ := io.ReadAll(br)
		if string(rest) != "b NOOP\r\n" {
			t.Fatalf("Discard read the next command: left %q", rest)
		}
	})
	t.Run("syntax error mid-line skips to the end of the line", func(t *testing.T) {
		br := bufio.NewReader(strings.NewReader("b NOOP\r\n"))
		d := NewDecoder([]byte("(a \"b\r\n"), br)
		d.List(func() bool { _, ok := d.AString(); return ok })
		if awaiting, err := d.Discard(1000); err != nil || awaiting {
			t.Fatalf("Discard = %v, %v", awaiting, err)
		}
		rest, _ := io.ReadAll(br)
		if string(rest) != "b NOOP\r\n" {
			t.Fatalf("after Discard: %q", rest)
		}
	})
	t.Run("too large to skip", func(t *testing.T) {
		d := NewDecoder([]byte("{100000+}\r\n"), bufio.NewReader(strings.NewReader("")))
		d.MaxLiteral = 10
		d.AString()
		if _, err := d.Discard(1000); !errors.Is(err, ErrLiteralRefused) {
			t.Fatalf("err = %v, want ErrLiteralRefused", err)
		}
	})
}

func TestDecodeMailbox(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{"INBOX", "INBOX"},
		{"Sent Messages", "Sent Messages"},
		{"Entw&APw-rfe", "Entwürfe"},
		{"&-amp", "&amp"},
		{"&ZeVnLIqe-", "日本語"},
		{"Gel&APY-schte Elemente", "Gelöschte Elemente"},
		{"Entwürfe", "Entwürfe"}, // UTF8=ACCEPT clients send UTF-8
	}
	for _, tt := range tests {
		got, err := DecodeMailbox(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("DecodeMailbox(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
	for _, bad := range []string{"&APw", "&!!!-", "\xff"} {
		if _, err := DecodeMailbox(bad); err == nil {
			t.Errorf("DecodeMailbox(%q) succeeded, want an error", bad)
		}
	}
}

func TestEncodeMailbox(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ in, want string }{
		{"INBOX", "INBOX"},
		{"inbox", "INBOX"},
		{"Sent Messages", "Sent Messages"},
		{"Entwürfe", "Entw&APw-rfe"},
		{"&amp", "&-amp"},
		{"日本語", "&ZeVnLIqe-"},
		{"Gelöschte Elemente", "Gel&APY-schte Elemente"},
		{"a😀b", "a&2D3eAA-b"},
		{"tab\there", "tab&AAk-here"},
	} {
		if got := EncodeMailbox(tt.in); got != tt.want {
			t.Errorf("EncodeMailbox(%q) = %q, want %q", tt.in, got, tt.want)
		}
		if back, err := DecodeMailbox(tt.want); err != nil || !strings.EqualFold(back, tt.in) {
			t.Errorf("DecodeMailbox(%q) = %q, %v; want %q back", tt.want, back, err, tt.in)
		}
	}
}

func TestQuote(t *testing.T) {
	t.Parallel()
	if got := Quote(`a"b\c`); got != `"a\"b\\c"` {
		t.Errorf("Quote = %s", got)
	}
	d := NewDecoder([]byte(Quote(`x"y\z`)+"\r\n"), nil)
	if s, ok := d.AString(); !ok || s != `x"y\z` {
		t.Errorf("round trip = %q, %v", s, ok)
	}
}

func TestString(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, want string }{
		{"INBOX", `"INBOX"`},
		{`Work "old" \ 2`, `"Work \"old\" \\ 2"`},
		{"", `""`},
		{"Entwürfe", "{9}\r\nEntwürfe"},
		{"a\tb", "{3}\r\na\tb"},
		{"\x7f", "{1}\r\n\x7f"},
	} {
		got := String(tc.in)
		if got != tc.want {
			t.Errorf("String(%q) = %q, want %q", tc.in, got, tc.want)
		}
		d := NewDecoder([]byte(got+"\r\n"), nil)
		if s, ok := d.AString(); !ok || s != tc.in || !d.CRLF() {
			t.Errorf("round trip of %q = %q, %v, %v", tc.in, s, ok, d.Err())
		}
	}
}

// FuzzDecoder feeds arbitrary bytes after real client lines: the decoder must
// never panic, and Discard must never read past the line it was on when no
// literal is involved. The input's first line is followed by the rest of
// the input and a sentinel command; when the decoder met no literal and the
// line announces none, Discard must leave the stream exactly at the start
// of the next line, or fail without having read past the line.
func FuzzDecoder(f *testing.F) {
	for _, seed := range []string{
		"a2 XAPPLEPUSHSERVICE aps-version 2 aps-account-id 0715A26B-CA09-4730-A419-793000CA982E aps-device-token 2918390218931890821908309283098109381029309829018310983092892829 aps-subtopic com.apple.mobilemail mailboxes (INBOX Notes)\r\n",
		"tag1 XAPPLEPUSHSERVICE \"aps-version\" \"1\" \"aps-account-id\" \"E8CD34AD-98D3-4489-A6BB-86B1D082FECE\" \"aps-device-token\" \"a66216ad1683d48b9933cdcc3b98a833ee1a968143f41ea494187da54715da66\" \"aps-subtopic\" \"com.apple.mobilemail\"\r\n",
		"a LOGIN {5}\r\nalice {3+}\r\npw!\r\n",
		"a X ((\"\\\"\" NIL) {2}\r\n\x00\x01)\r\n",
	} {
		f.Add([]byte(seed))
	}
	const sentinel = "S1 NOOP\r\n"
	f.Fuzz(func(t *testing.T, in []byte) {
		first, after := string(in), sentinel
		if i := bytes.IndexByte(in, '\n'); i >= 0 {
			first, after = string(in[:i+1]), string(in[i+1:])+sentinel
		} else {
			first += "\r\n"
		}
		br := bufio.NewReaderSize(strings.NewReader(first+after), 16)
		d := NewDecoder(nil, br)
		d.MaxLiteral = 64
		sawLiteral := false
		d.CheckLiteral = func(Literal) error { sawLiteral = true; return nil }
		for i := 0; i < 50 && d.Err() == nil && !d.AtEOL(); i++ {
			if d.Is('(') {
				d.List(func() bool { _, _, ok := d.NString(); return ok })
			} else {
				d.NString()
			}
			d.Special(' ')
		}
		awaiting, err := d.Discard(64)
		if _, announced := LiteralSuffix([]byte(first)); sawLiteral || d.refused != nil || announced {
			return
		}
		left, _ := io.ReadAll(br)
		switch {
		case !strings.HasSuffix(string(left), after):
			t.Fatalf("Discard read past the line %q: left %q (err %v)", first, left, err)
		case awaiting:
			t.Fatalf("Discard of %q is awaiting a literal that was never announced", first)
		case err == nil && string(left) != after:
			t.Fatalf("Discard of %q returned inside the line: left %q", first, left)
		}
	})
}
