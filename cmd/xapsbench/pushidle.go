package main

import (
	"bytes"
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// idleClient is the baseline of the push phase: a plain IMAP client
// logged in directly on Dovecot, idling on INBOX, noting when each
// "* N EXISTS" arrives.
type idleClient struct {
	c       *imapConn
	initial int // messages in INBOX when it was selected

	mu     sync.Mutex
	exists []existsEvent // not yet taken
	err    error         // why reading stopped
	wake   chan struct{} // 1-buffered
	done   chan struct{} // closed when the reader has stopped
}

type existsEvent struct {
	n  int
	at time.Time
}

func existsRE() *regexp.Regexp { return regexp.MustCompile(`^\* (\d+) EXISTS\r\n$`) }

// startIdle logs in as user on Dovecot (addr, plain text), SELECTs INBOX,
// starts IDLE and reads from then on in its own goroutine. Close ends it.
func startIdle(ctx context.Context, addr, user, password string) (*idleClient, error) {
	c, err := dialIMAP(ctx, target{name: "direct IDLE client", addr: addr}, 4096)
	if err != nil {
		return nil, err
	}
	ic := &idleClient{c: c, wake: make(chan struct{}, 1), done: make(chan struct{})}
	if err := ic.setup(ctx, user, password); err != nil {
		c.Close()
		return nil, fmt.Errorf("direct IDLE client: %w", err)
	}
	go ic.read()
	return ic, nil
}

func (ic *idleClient) setup(ctx context.Context, user, password string) error {
	c, re := ic.c, existsRE()
	if err := c.deadline(ctx, 30*time.Second); err != nil {
		return err
	}
	if _, err := c.tagged("i1", "LOGIN "+user+" "+password); err != nil {
		return err
	}
	untagged, err := c.tagged("i2", "SELECT INBOX")
	if err != nil {
		return err
	}
	ic.initial = -1
	for _, line := range untagged {
		if m := re.FindSubmatch(line); m != nil {
			ic.initial, _ = strconv.Atoi(string(m[1]))
		}
	}
	if ic.initial < 0 {
		return fmt.Errorf("SELECT INBOX: no EXISTS in %q", untagged)
	}
	if _, err := c.conn.Write([]byte("i3 IDLE\r\n")); err != nil {
		return fmt.Errorf("IDLE: %w", err)
	}
	line, err := c.readLine()
	if err != nil {
		return fmt.Errorf("IDLE: %w", err)
	}
	if !bytes.HasPrefix(line, []byte("+")) {
		return fmt.Errorf("IDLE: %q, want a continuation", line)
	}
	return c.deadline(ctx, 24*time.Hour) // Close ends the reader
}

// read notes every EXISTS until the connection fails or is closed.
func (ic *idleClient) read() {
	defer close(ic.done)
	re := existsRE()
	for {
		line, err := ic.c.readLine()
		at := time.Now()
		ic.mu.Lock()
		if err != nil {
			ic.err = err
			ic.mu.Unlock()
			ic.signal()
			return
		}
		if m := re.FindSubmatch(line); m != nil {
			n, _ := strconv.Atoi(string(m[1]))
			ic.exists = append(ic.exists, existsEvent{n: n, at: at})
		}
		ic.mu.Unlock()
		ic.signal()
	}
}

func (ic *idleClient) signal() {
	select {
	case ic.wake <- struct{}{}:
	default:
	}
}

// waitExists waits up to timeout for an EXISTS of at least n messages,
// dropping the EXISTS for fewer. found is false on timeout; an error means
// the connection failed or ctx is done.
func (ic *idleClient) waitExists(ctx context.Context, n int, timeout time.Duration) (ev existsEvent, found bool, err error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		ic.mu.Lock()
		for len(ic.exists) > 0 {
			ev, ic.exists = ic.exists[0], ic.exists[1:]
			if ev.n >= n {
				ic.mu.Unlock()
				return ev, true, nil
			}
		}
		err := ic.err
		ic.mu.Unlock()
		if err != nil {
			return ev, false, fmt.Errorf("direct IDLE client: %w", err)
		}
		select {
		case <-ic.wake:
		case <-t.C:
			return ev, false, nil
		case <-ctx.Done():
			return ev, false, ctx.Err()
		}
	}
}

// Close drops the connection and waits for the reader.
func (ic *idleClient) Close() {
	ic.c.Close()
	<-ic.done
}

// tagged sends "tag command" and reads up to the tagged response, which
// must be OK; it returns the untagged lines before it. It is for short
// exchanges without literals (login, SELECT, XAPPLEPUSHSERVICE).
func (c *imapConn) tagged(tag, command string) ([][]byte, error) {
	if _, err := c.conn.Write([]byte(tag + " " + command + "\r\n")); err != nil {
		return nil, fmt.Errorf("%s %s: %w", tag, firstWord(command), err)
	}
	var untagged [][]byte
	for {
		line, err := c.readLine()
		if err != nil {
			return untagged, fmt.Errorf("%s %s: %w", tag, firstWord(command), err)
		}
		if rest, ok := bytes.CutPrefix(line, []byte(tag+" ")); ok {
			if !bytes.HasPrefix(rest, []byte("OK")) {
				return untagged, fmt.Errorf("%s %s: %s", tag, firstWord(command), bytes.TrimSpace(line))
			}
			return untagged, nil
		}
		untagged = append(untagged, bytes.Clone(line))
	}
}

// firstWord names a command in errors without its arguments (passwords).
func firstWord(command string) string {
	w, _, _ := strings.Cut(command, " ")
	return w
}
