package dovecottest

import (
	"testing"

	"github.com/xapsproxy/xapsproxy/internal/dovecotrun"
)

// EventsHook is the ExtraConfig that makes Dovecot post its mail events to
// url with secret, as a site sets it up: contrib/dovecot/95-xapsproxy.conf
// as shipped, with the script (InstallEventsScript) in the instance
// directory and the site's two values filled in.
func EventsHook(t testing.TB, url, secret string) string {
	t.Helper()
	conf, err := dovecotrun.EventsHook(url, secret)
	if err != nil {
		t.Fatal(err)
	}
	return conf
}

// InstallEventsScript puts contrib/dovecot/xapsproxy.lua where EventsHook
// points. Dovecot loads it when it sets a user up, so it need only be in
// place before the first delivery or login.
func (d *Dovecot) InstallEventsScript(t testing.TB) {
	t.Helper()
	if err := d.inst.InstallEventsScript(); err != nil {
		t.Fatal(err)
	}
}
