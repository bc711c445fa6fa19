package watch

import (
	"testing"
	"time"

	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/xapsproxy/xapsproxy/internal/dovecottest"
)

func TestZZExp(t *testing.T) {
	t0 := time.Now()
	d := dovecottest.Start(t, dovecottest.Options{Hibernate: true})
	t.Logf("start %v", time.Since(t0))
	t.Logf("who empty: %q", d.Doveadm(t, "who"))
	c, err := imapclient.DialInsecure(d.IMAPAddr, nil)
	if err != nil { t.Fatal(err) }
	if err := c.Login("alice*master", "masterpw").Wait(); err != nil { t.Fatal(err) }
	if _, err := c.Select("INBOX", nil).Wait(); err != nil { t.Fatal(err) }
	t.Logf("who selected: %q", d.Doveadm(t, "who"))
	idle, err := c.Idle()
	if err != nil { t.Fatal(err) }
	for i := 0; i < 30; i++ {
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("who hibernated: %q", d.Doveadm(t, "who"))
	t.Logf("who -1: %q", d.Doveadm(t, "who", "-1"))
	idle.Close(); idle.Wait()
	c.Close()
	time.Sleep(300 * time.Millisecond)
	t.Logf("who closed: %q", d.Doveadm(t, "who"))
	t0 = time.Now()
	d.Doveadm(t, "mailbox", "create", "-u", "alice", "Notes")
	t.Logf("doveadm %v", time.Since(t0))
	t.Logf("status: %q", d.Doveadm(t, "mailbox", "status", "-u", "alice", "uidvalidity uidnext", "INBOX"))
	t.Logf("log: %s", d.Log())
}
