package main

import (
	"net"
	"net/netip"
	"sync"
	"time"
)

// The admin listener answers whoever reaches admin.listen (/healthz and
// /readyz need no token), in the process that serves IMAP. So that
// connections held open cannot use up the file descriptors and memory the
// proxy's clients and backend connections need, one address may hold at
// most adminConnsPerIP of them (an IPv6 one: its /64) (the next is closed at once, leaving the
// others' probes unhurt), and an idle one is closed after adminIdleTimeout.
const (
	adminConnsPerIP  = 32
	adminIdleTimeout = 2 * time.Minute
)

// remoteKey is the address a connection counts against: its IP, or for
// IPv6 its /64, as one host holds a whole /64.
func remoteKey(a net.Addr) string {
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return a.String()
	}
	ip := ap.Addr().Unmap()
	if ip.Is4() {
		return ip.String()
	}
	p, _ := ip.Prefix(64)
	return p.String()
}

// perIPListener closes a connection beyond max from one address.
type perIPListener struct {
	net.Listener
	max int

	mu   sync.Mutex
	open map[string]int // by remote address (IP)
}

func limitPerIP(ln net.Listener, max int) net.Listener {
	return &perIPListener{Listener: ln, max: max, open: map[string]int{}}
}

func (l *perIPListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := remoteKey(c.RemoteAddr())
		l.mu.Lock()
		full := l.open[ip] >= l.max
		if !full {
			l.open[ip]++
		}
		l.mu.Unlock()
		if full {
			c.Close()
			continue
		}
		return &perIPConn{Conn: c, release: func() { l.release(ip) }}, nil
	}
}

func (l *perIPListener) release(ip string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open[ip]--; l.open[ip] <= 0 {
		delete(l.open, ip)
	}
}

// perIPConn gives its slot back on its first Close.
type perIPConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *perIPConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
