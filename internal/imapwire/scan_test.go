package imapwire

import "testing"

func TestScanCommandLine(t *testing.T) {
	t.Parallel()
	tests := []struct {
		line    string
		lit     Literal
		hasLit  bool
		wantErr string
	}{
		{"a NOOP\r\n", Literal{}, false, ""},
		{"a APPEND INBOX {5}\r\n", Literal{Size: 5}, true, ""},
		{"a APPEND INBOX {5+}\n", Literal{Size: 5, NonSync: true}, true, ""},
		{"a APPEND INBOX ~{5}\r\n", Literal{Size: 5}, true, ""},
		{"a SELECT {0000000000000000005}\r\n", Literal{Size: 5}, true, ""},
		{`a SELECT "{5}"` + "\r\n", Literal{}, false, ""},
		{`a SELECT "a\"{5}" x{0}` + "\r\n", Literal{Size: 0}, true, ""},
		{`a SELECT "a\\" {1}` + "\r\n", Literal{Size: 1}, true, ""},
		{"a NOOP x\rb\r\n", Literal{}, false, ""}, // a bare CR is not a line end
		{"a NOOP {0}x\r\n", Literal{}, false, "literal header not at the end of the line"},
		{"a NOOP {0} \r\n", Literal{}, false, "literal header not at the end of the line"},
		{"a NOOP {0}\r\r\n", Literal{}, false, "literal header not at the end of the line"},
		{"a NOOP {5} {5}\r\n", Literal{}, false, "literal header not at the end of the line"},
		{"a NOOP {12x}\r\n", Literal{}, false, "literal header not at the end of the line"},
		{"a NOOP {\r\n", Literal{}, false, "literal header not at the end of the line"},
		{"a NOOP {}\r\n", Literal{}, false, "literal header without a size"},
		{"a NOOP {+}\r\n", Literal{}, false, "literal header without a size"},
		{"a NOOP {99999999999999999999}\r\n", Literal{}, false, "literal size too large"},
		{`a NOOP "abc` + "\r\n", Literal{}, false, "unterminated quoted string"},
		{`a NOOP "abc\` + "\r\n", Literal{}, false, "unterminated quoted string"},
		{"a NOOP \"a\rb\"\r\n", Literal{}, false, "unterminated quoted string"},
	}
	for _, tt := range tests {
		lit, hasLit, err := ScanCommandLine([]byte(tt.line))
		switch {
		case tt.wantErr != "" && (err == nil || err.Error() != tt.wantErr):
			t.Errorf("%q: err %v, want %q", tt.line, err, tt.wantErr)
		case tt.wantErr == "" && (err != nil || lit != tt.lit || hasLit != tt.hasLit):
			t.Errorf("%q: %+v %v %v, want %+v %v", tt.line, lit, hasLit, err, tt.lit, tt.hasLit)
		}
	}
}
