package main

import (
	"log/slog"
	"time"
)

// Warning about the APNs certificate's expiry: Apple does not tell the
// phone, pushes just stop, so the operator hears of it from the log first.
const (
	expiryWarnBefore = 30 * 24 * time.Hour
	expiryCheckEvery = 24 * time.Hour
	expiryFix        = "renew it, replace apns.certificate_file and send xapsproxy SIGHUP (kill -HUP its PID; xapsproxy cert FILE shows a file's expiry)"
)

// warnExpiry logs, when the APNs certificate expires within
// expiryWarnBefore of now, a warning with the days left (an error once it
// has expired). It says nothing for a certificate further from its end, or
// for token credentials (zero notAfter).
func warnExpiry(log *slog.Logger, notAfter, now time.Time) {
	if notAfter.IsZero() {
		return
	}
	left := notAfter.Sub(now)
	switch {
	case left <= 0:
		log.Error("the APNs certificate has expired: APNs refuses every push until it is renewed",
			"expired", notAfter.UTC().Format(time.RFC3339), "fix", expiryFix)
	case left < expiryWarnBefore:
		log.Warn("the APNs certificate expires soon: renew it before then, or pushes stop",
			"expires", notAfter.UTC().Format(time.RFC3339), "days_left", int(left/(24*time.Hour)),
			"fix", expiryFix)
	}
}
