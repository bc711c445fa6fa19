package main

import (
	"errors"
	"time"

	"github.com/xapsproxy/xapsproxy/push"
)

// reloadAPNs reads the APNs credential again (SIGHUP after a renewal) and
// has the pusher use it for every push from now on, without a pause:
// pushes in flight finish with the old one. A credential that does not
// load, or is for another topic, is refused with one error line, and the
// current one stays. Pushes held because APNs refused the old credential
// are tried again at once.
func (a *app) reloadAPNs(now time.Time) {
	if a.apns == nil {
		return // a sender given by a test
	}
	creds, err := push.LoadCredentials(a.cfg.APNS, now)
	if err != nil {
		a.log.Error("APNs credential not reloaded; keeping the current one", "err", err)
		return
	}
	if err := a.apns.Reload(creds); err != nil {
		if errors.Is(err, push.ErrTopicChanged) {
			a.log.Error("APNs credential not reloaded: it is for another topic; keeping the current one",
				"topic", creds.Topic, "current", a.topic,
				"fix", "devices registered with the current topic; install a renewal of the same certificate (same UID), or restart xapsproxy to change topics (each device then gets pushes again after its next IMAP session)")
			return
		}
		a.log.Error("APNs credential not reloaded; keeping the current one", "err", err)
		return
	}
	a.setAPNsExpiry(creds)
	a.pusher.CredentialReloaded()
	a.log.Info("APNs credential reloaded", "summary", creds.Describe())
	warnExpiry(a.log, a.apnsExpiry(), now)
}

// setAPNsExpiry records when the APNs credential in use expires.
func (a *app) setAPNsExpiry(creds *push.Credentials) {
	var unix int64
	if creds.Certificate != nil && !creds.NotAfter.IsZero() {
		unix = creds.NotAfter.Unix()
	}
	a.apnsExpires.Store(unix)
}

// apnsExpiry is when the APNs credential in use expires; zero for a token
// key or a sender given by a test.
func (a *app) apnsExpiry() time.Time {
	if unix := a.apnsExpires.Load(); unix != 0 {
		return time.Unix(unix, 0)
	}
	return time.Time{}
}
