package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"

	"github.com/xapsproxy/xapsproxy/internal/imapwire"
)

// imapConn is a minimal IMAP client: it writes command lines and reads
// responses, skipping (or copying) literals by their length. It does no
// parsing beyond that, so that client-side work hardly masks differences
// between the paths measured.
type imapConn struct {
	conn  net.Conn
	r     *bufio.Reader
	tag   int
	cmd   []byte // scratch for the command being written
	line  []byte // scratch for a response line
	state *tls.ConnectionState
	stop  func() bool // unregisters the context watch
}

// target is one way to reach alice's mailbox: direct, or through a proxy.
type target struct {
	name string
	addr string
	tls  *tls.Config // nil: plain text
}

// dialIMAP connects, does TLS if t says so, and reads the greeting. When
// ctx is done, all I/O on the connection fails.
func dialIMAP(ctx context.Context, t target, bufSize int) (*imapConn, error) {
	d := net.Dialer{Timeout: 10 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", t.addr)
	if err != nil {
		return nil, fmt.Errorf("%s: dial: %w", t.name, err)
	}
	c := &imapConn{conn: conn}
	c.stop = context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	if t.tls != nil {
		tc := tls.Client(conn, t.tls)
		if err := tc.HandshakeContext(ctx); err != nil {
			c.Close()
			return nil, fmt.Errorf("%s: TLS handshake: %w", t.name, err)
		}
		st := tc.ConnectionState()
		c.conn, c.state = tc, &st
	}
	c.r = bufio.NewReaderSize(c.conn, bufSize)
	greeting, err := c.readLine()
	if err == nil && !bytes.HasPrefix(greeting, []byte("* OK")) {
		err = fmt.Errorf("greeting %q", greeting)
	}
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("%s: %w", t.name, err)
	}
	return c, nil
}

// Close closes the connection.
func (c *imapConn) Close() error {
	c.stop()
	return c.conn.Close()
}

// deadline bounds the I/O of the next phase; a cancelled ctx still wins.
func (c *imapConn) deadline(ctx context.Context, d time.Duration) error {
	c.conn.SetDeadline(time.Now().Add(d))
	if err := ctx.Err(); err != nil {
		c.conn.SetDeadline(time.Unix(1, 0))
		return err
	}
	return nil
}

// readLine reads one response line (with its CRLF) into the scratch buffer.
func (c *imapConn) readLine() ([]byte, error) {
	line, err := imapwire.ReadLine(c.r, c.line, 1<<20)
	c.line = line[:0]
	return line, err
}

// result is what a command returned: the literal bytes of its responses.
type result struct {
	literalBytes int64
	literals     int
}

// run sends one command (without tag and CRLF) and reads the responses up
// to its tagged completion, which must be OK. Literals are copied to sink,
// or skipped when sink is nil.
func (c *imapConn) run(command string, sink io.Writer) (result, error) {
	c.tag++
	c.cmd = append(c.cmd[:0], 'x')
	c.cmd = strconv.AppendInt(c.cmd, int64(c.tag), 10)
	tagLen := len(c.cmd)
	c.cmd = append(c.cmd, ' ')
	c.cmd = append(c.cmd, command...)
	c.cmd = append(c.cmd, '\r', '\n')
	if _, err := c.conn.Write(c.cmd); err != nil {
		return result{}, err
	}
	tag := c.cmd[:tagLen+1] // "xN "
	var res result
	for {
		line, err := c.readLine()
		if err != nil {
			return res, fmt.Errorf("%s: %w", command, err)
		}
		for {
			lit, ok := imapwire.LiteralSuffix(line)
			n := lit.Size
			if !ok {
				break
			}
			if sink == nil {
				_, err = c.r.Discard(int(n))
			} else {
				_, err = io.CopyN(sink, c.r, n)
			}
			if err != nil {
				return res, fmt.Errorf("%s: literal: %w", command, err)
			}
			res.literalBytes += n
			res.literals++
			if line, err = c.readLine(); err != nil {
				return res, fmt.Errorf("%s: %w", command, err)
			}
		}
		if rest, ok := bytes.CutPrefix(line, tag); ok {
			if !bytes.HasPrefix(rest, []byte("OK")) {
				return res, fmt.Errorf("%s: %s", command, bytes.TrimSpace(line))
			}
			return res, nil
		}
	}
}

// login logs in as user (a plain atom name and password).
func (c *imapConn) login(user, password string) error {
	_, err := c.run("LOGIN "+user+" "+password, nil)
	return err
}

// tlsSummary names the negotiated TLS version, cipher suite and key
// exchange, or "plain text".
func (c *imapConn) tlsSummary() string {
	if c.state == nil {
		return "plain text"
	}
	return fmt.Sprintf("%s %s %s", tls.VersionName(c.state.Version),
		tls.CipherSuiteName(c.state.CipherSuite), c.state.CurveID)
}
