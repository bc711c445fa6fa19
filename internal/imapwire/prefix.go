package imapwire

import "io"

// PrefixReader reads Pre, then R: what a connection's first read took
// (to look at the greeting or the first line) goes back in front of the
// stream.
type PrefixReader struct {
	Pre []byte
	R   io.Reader
}

func (p *PrefixReader) Read(b []byte) (int, error) {
	if len(p.Pre) > 0 {
		n := copy(b, p.Pre)
		p.Pre = p.Pre[n:]
		return n, nil
	}
	return p.R.Read(b)
}
