package push

import "time"

// Clock is the Pusher's time: the timestamps it records and schedules by,
// and the timer its Run waits on. Tests give a fake one to drive the
// change delay and retries without waiting.
type Clock interface {
	Now() time.Time
	// NewTimer returns a stopped timer.
	NewTimer() Timer
}

// Timer is the one timer of a Run. Deadlines are absolute, so that a fake
// clock knows exactly what Run waits for. After Reset or Stop, no value
// from before is received from C (as with time.Timer since Go 1.23).
type Timer interface {
	C() <-chan time.Time
	// Reset makes the timer fire once at at; at once if at is not after
	// Now.
	Reset(at time.Time)
	Stop()
}

// realClock is the Clock of the time package.
type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) NewTimer() Timer {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return realTimer{t}
}

type realTimer struct{ t *time.Timer }

func (r realTimer) C() <-chan time.Time { return r.t.C }
func (r realTimer) Reset(at time.Time)  { r.t.Reset(time.Until(at)) }
func (r realTimer) Stop()               { r.t.Stop() }
