package imapnotify

import (
	"bufio"
	"sync"

	"github.com/xapsproxy/xapsproxy/internal/imapwire"
)

// readerPool holds the read buffers of connections that are being read;
// a connection waiting for the server holds none (see waitInput).
var readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, readBufferSize) }}

// firstSize is the small array an idle wait reads into: an update such as
// "* 3 EXISTS" fits whole.
const firstSize = 64

// reader returns the connection's read buffer, borrowing one if it has
// none.
func (c *Client) reader() *bufio.Reader {
	if c.br == nil {
		c.br = readerPool.Get().(*bufio.Reader)
		c.br.Reset(c.rw)
	}
	return c.br
}

// releaseReader gives the read buffer back; whatever it holds is lost, so
// it is called only when it holds nothing.
func (c *Client) releaseReader() {
	if c.br != nil {
		c.br.Reset(nil)
		readerPool.Put(c.br)
		c.br = nil
	}
}

// waitInput returns once something from the server can be read, under the
// read deadline already set; an error means nothing was consumed. While
// the server is silent the client holds no buffer: the wait reads into
// c.first, and a buffer is borrowed when data comes.
func (c *Client) waitInput() error {
	if c.br != nil {
		if c.br.Buffered() > 0 {
			return nil
		}
		c.releaseReader()
	}
	if cap(c.buf) > firstSize {
		c.buf = nil
	}
	for {
		n, err := c.rw.Read(c.first[:])
		if n > 0 {
			c.pre = imapwire.PrefixReader{Pre: c.first[:n], R: c.rw}
			c.br = readerPool.Get().(*bufio.Reader)
			c.br.Reset(&c.pre)
			return nil
		}
		if err != nil {
			return err
		}
	}
}
