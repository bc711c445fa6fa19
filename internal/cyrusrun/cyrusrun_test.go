package cyrusrun

import (
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/xapsproxy/xapsproxy/internal/serverproc"
)

func login(t *testing.T, c *Instance, user, password string, opts *imapclient.Options) (*imapclient.Client, error) {
	t.Helper()
	cl, err := imapclient.DialInsecure(c.IMAPAddr, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl, cl.Login(user, password).Wait()
}

func TestInstance(t *testing.T) {
	t.Parallel()
	c := StartTest(t, Options{})
	cl, err := login(t, c, "alice", "alicepw", nil)
	if err != nil {
		t.Fatalf("LOGIN alice: %v", err)
	}
	if err := c.Deliver("alice@example.com", []byte("Subject: one\r\n\r\nHello.\r\n")); err != nil {
		t.Fatal(err)
	}
	st, err := cl.Status("INBOX", &imap.StatusOptions{NumMessages: true, UIDNext: true}).Wait()
	if err != nil || st.NumMessages == nil || *st.NumMessages != 1 {
		t.Fatalf("STATUS INBOX: %+v, %v", st, err)
	}

	// The password changes while the server runs.
	if err := c.SetPassword("alice", "new alice pw"); err != nil {
		t.Fatal(err)
	}
	if _, err := login(t, c, "alice", "alicepw", nil); err == nil {
		t.Fatal("the old password still works")
	}
	if _, err := login(t, c, "alice", "new alice pw", nil); err != nil {
		t.Fatalf("the new password: %v", err)
	}
	if c.Password("alice") != "new alice pw" {
		t.Errorf("Password = %q", c.Password("alice"))
	}
	if _, err := login(t, c, "bob", "wrong", nil); err == nil {
		t.Fatal("a wrong password works")
	}
}

// IDLE announces a delivery within a few seconds.
func TestIdle(t *testing.T) {
	t.Parallel()
	c := StartTest(t, Options{Users: map[string]string{"carol": "carolpw"}})
	exists := make(chan uint32, 10)
	cl, err := login(t, c, "carol", "carolpw", &imapclient.Options{
		UnilateralDataHandler: &imapclient.UnilateralDataHandler{
			Mailbox: func(d *imapclient.UnilateralDataMailbox) {
				if d.NumMessages != nil {
					exists <- *d.NumMessages
				}
			},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	idle, err := cl.Idle()
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	start := time.Now()
	if err := c.Deliver("carol", []byte("Subject: idle\r\n\r\nHello.\r\n")); err != nil {
		t.Fatal(err)
	}
	for {
		select {
		case n := <-exists:
			if n == 1 {
				t.Logf("EXISTS %v after the delivery", time.Since(start).Round(time.Millisecond))
				return
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no EXISTS within 10s of a delivery")
		}
	}
}

func TestStop(t *testing.T) {
	t.Parallel()
	c := StartTest(t, Options{})
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := serverproc.Probe(c.IMAPAddr, "* OK"); err == nil {
		t.Fatal("IMAP still answers after Stop")
	}
}
