package proxy

import (
	"net"
	"sync/atomic"
	"time"
)

// deadlineWriter gives each write to conn its own deadline: a peer that
// stops reading is cut off after timeout (the write fails and the session
// ends), while one that keeps reading, however slowly, never is. Once
// frozen (the session is closing and set a short deadline of its own), it
// leaves the deadline alone.
type deadlineWriter struct {
	conn    net.Conn
	timeout time.Duration
	frozen  *atomic.Bool
}

func (w deadlineWriter) Write(p []byte) (int, error) {
	if !w.frozen.Load() {
		w.conn.SetWriteDeadline(time.Now().Add(w.timeout))
	}
	return w.conn.Write(p)
}
