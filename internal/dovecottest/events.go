package dovecottest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/xapsproxy/xapsproxy/internal/dovecotrun"
)

// The values in contrib/dovecot/95-xapsproxy.conf that a site changes.
const (
	hookScript = "lua:file=/etc/dovecot/xapsproxy.lua"
	hookURL    = "http://127.0.0.1:9144/dovecot/events"
	hookSecret = "xapsproxy_secret = </etc/xapsproxy/events-secret"
)

// EventsHook is the ExtraConfig that makes Dovecot post its mail events to
// url with secret, as a site sets it up: contrib/dovecot/95-xapsproxy.conf
// as shipped, with the script (InstallEventsScript) in the instance
// directory and the site's two values filled in.
func EventsHook(t testing.TB, url, secret string) string {
	t.Helper()
	conf := contribFile(t, "95-xapsproxy.conf")
	for _, s := range []string{hookScript, hookURL, hookSecret} {
		if strings.Count(conf, s) != 1 {
			t.Fatalf("dovecottest: 95-xapsproxy.conf: %q is not there exactly once", s)
		}
	}
	return strings.NewReplacer(hookScript, "lua:file=@DIR@/xapsproxy.lua", hookURL, url,
		hookSecret, "xapsproxy_secret = "+secret).Replace(conf)
}

// InstallEventsScript puts contrib/dovecot/xapsproxy.lua where EventsHook
// points. Dovecot loads it when it sets a user up, so it need only be in
// place before the first delivery or login.
func (d *Dovecot) InstallEventsScript(t testing.TB) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(d.Dir, "xapsproxy.lua"), []byte(contribFile(t, "xapsproxy.lua")), 0o644); err != nil {
		t.Fatal(err)
	}
}

func contribFile(t testing.TB, name string) string {
	t.Helper()
	root, err := dovecotrun.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(root, "contrib", "dovecot", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
