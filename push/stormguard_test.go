package push_test

import (
	"testing"
	"time"

	"github.com/xapsproxy/xapsproxy/push"
)

// With a storm guard, changes push a registration at most once per
// ChangeInterval, however they come; new mail goes out at once all the
// same, and carries the changes waiting.
func TestStormGuard(t *testing.T) {
	const every = 5 * time.Minute
	clk, s := newFakeClock(), &funcSender{}
	p := push.New(push.Options{Store: newMemStore(reg("alice", 1, "acct-a", "INBOX", "Notes")), Sender: s,
		Logger: testLogger(t), Clock: clk, ChangeInterval: every})
	startRun(t, p)

	// The first burst: one push, change_delay after it.
	p.Notify(changed("alice", "INBOX"))
	clk.waitArmed(t, clk.Now().Add(push.DefaultChangeDelay))
	clk.Advance(push.DefaultChangeDelay)
	waitFor(t, 5*time.Second, "the first change push", func() bool { return len(s.sent()) == 1 })
	waitIdle(t, p)
	first := clk.Now()

	// The next change waits for the guard, not for change_delay.
	clk.Advance(10 * time.Second)
	p.Notify(changed("alice", "INBOX"))
	clk.waitArmed(t, first.Add(every))
	clk.Advance(first.Add(every).Sub(clk.Now()) - time.Millisecond)
	if n := len(s.sent()); n != 1 {
		t.Fatalf("%d pushes before the guard's interval was over, want 1", n)
	}
	clk.Advance(time.Millisecond)
	waitFor(t, 5*time.Second, "the second change push", func() bool { return len(s.sent()) == 2 })
	waitIdle(t, p)
	second := clk.Now()

	// A change, then new mail: the new mail is not held back, and takes
	// the change along; nothing follows.
	clk.Advance(time.Second)
	p.Notify(changed("alice", "Notes"))
	clk.waitArmed(t, second.Add(every))
	p.Notify(newMail("alice", "INBOX"))
	waitFor(t, 5*time.Second, "the new-mail push", func() bool { return len(s.sent()) == 3 })
	waitIdle(t, p)
	if got := s.sent()[2].Mailboxes; len(got) != 2 {
		t.Errorf("the new-mail push names %q, want INBOX and Notes", got)
	}
	if a := clk.armed(); len(a) != 0 {
		t.Errorf("the pusher still waits for %v after the new mail carried the change", a)
	}
}
