package proxy

import (
	"bufio"
	"io"
	"sync"

	"github.com/xapsproxy/xapsproxy/internal/imapwire"
)

// Buffers are borrowed from pools only while a connection has something to
// read or write, so an idle session (the usual state of an IMAP connection:
// phones sit in IDLE for hours) holds no buffer at all.
const (
	readBufferSize  = 4 << 10  // line reads; large literals bypass it
	writeBufferSize = 32 << 10 // streaming: big writes, few TLS records and syscalls
)

var (
	readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, readBufferSize) }}
	writerPool = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, writeBufferSize) }}
)

// lazyReader reads a connection through a pooled bufio.Reader, which it gives
// back whenever it has consumed everything read so far. Only one goroutine
// may use it.
type lazyReader struct {
	conn io.Reader
	br   *bufio.Reader // nil while idle
	// An idle wait reads into this small array: most commands and short
	// responses fit, so the pooled buffer needs no second read for them.
	first [256]byte
	pre   imapwire.PrefixReader
}

// next returns a reader holding at least one byte of the next input,
// blocking while the connection is idle.
func (l *lazyReader) next() (*bufio.Reader, error) {
	if l.br != nil {
		if l.br.Buffered() > 0 {
			return l.br, nil
		}
		l.release()
	}
	for {
		n, err := l.conn.Read(l.first[:])
		if n > 0 {
			l.pre = imapwire.PrefixReader{Pre: l.first[:n], R: l.conn}
			l.br = readerPool.Get().(*bufio.Reader)
			l.br.Reset(&l.pre)
			return l.br, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

// release gives the buffer back; anything still buffered is lost, so callers
// do it only between commands or when the connection is done with.
func (l *lazyReader) release() {
	if l.br != nil {
		l.br.Reset(nil)
		readerPool.Put(l.br)
		l.br = nil
	}
}

// lazyWriter writes through a pooled bufio.Writer, which Flush gives back.
// Callers serialise their use (session.wmu, or the client reader alone).
type lazyWriter struct {
	w  io.Writer
	bw *bufio.Writer // nil while nothing is buffered
}

func (l *lazyWriter) buf() *bufio.Writer {
	if l.bw == nil {
		l.bw = writerPool.Get().(*bufio.Writer)
		l.bw.Reset(l.w)
	}
	return l.bw
}

func (l *lazyWriter) Write(p []byte) (int, error)       { return l.buf().Write(p) }
func (l *lazyWriter) WriteString(s string) (int, error) { return l.buf().WriteString(s) }

// ReadFrom lets io.Copy fill the buffer straight from the reader.
func (l *lazyWriter) ReadFrom(r io.Reader) (int64, error) { return l.buf().ReadFrom(r) }

// Flush writes what is buffered and gives the buffer back.
func (l *lazyWriter) Flush() error {
	if l.bw == nil {
		return nil
	}
	if err := l.bw.Flush(); err != nil {
		return err
	}
	l.bw.Reset(nil)
	writerPool.Put(l.bw)
	l.bw = nil
	return nil
}
