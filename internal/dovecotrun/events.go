package dovecotrun

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
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
func EventsHook(url, secret string) (string, error) {
	conf, err := contribFile("95-xapsproxy.conf")
	if err != nil {
		return "", err
	}
	for _, s := range []string{hookScript, hookURL, hookSecret} {
		if strings.Count(conf, s) != 1 {
			return "", fmt.Errorf("dovecotrun: 95-xapsproxy.conf: %q is not there exactly once", s)
		}
	}
	return strings.NewReplacer(hookScript, "lua:file=@DIR@/xapsproxy.lua", hookURL, url,
		hookSecret, "xapsproxy_secret = "+secret).Replace(conf), nil
}

// InstallEventsScript puts contrib/dovecot/xapsproxy.lua where EventsHook
// points. Dovecot loads it when it sets a user up, so it need only be in
// place before the first delivery or login.
func (d *Instance) InstallEventsScript() error {
	script, err := contribFile("xapsproxy.lua")
	if err != nil {
		return err
	}
	return d.writeFile("xapsproxy.lua", script)
}

// contribFile reads a file of contrib/dovecot at the module root.
func contribFile(name string) (string, error) {
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	b, err := os.ReadFile(filepath.Join(root, "contrib", "dovecot", name))
	if err != nil {
		return "", fmt.Errorf("dovecotrun: %w", err)
	}
	return string(b), nil
}
