package push

import (
	"context"
	"net/http"
	"time"

	"github.com/sideshow/apns2"
)

// When APNs as a whole cannot take pushes, sending every waiting push to
// find out would be a retry storm, and letting each wait out its own
// backoff would leave the backlog waiting minutes after APNs is back. So
// the Pusher holds all pushes behind a gate and sends one at a time, a
// probe, until one is answered; then every push waiting goes at once.
//
//   - An outage: OutageAfter answers in a row that are 5xx or no answer at
//     all (timeouts, connections refused or reset), for more than one
//     device, with no success between.
//     Probes go after RetryBase, doubling up to MaxProbeInterval, or after
//     the Retry-After APNs asked for.
//   - A refused credential: any 403 (certificate or provider token: wrong,
//     expired, revoked, for the other environment) or 429
//     TooManyProviderTokenUpdates. No push can succeed until the operator
//     acts, so the gate closes at once, an error says what to fix, and
//     the credential is tried again every CredentialRecheck: Apple may
//     have been wrong for a while, or the account restored.
//
// A push that fails for its own device (429 TooManyRequests, or one 5xx
// among successes) only backs off itself.
const (
	OutageAfter              = 3
	MaxProbeInterval         = time.Second
	DefaultCredentialRecheck = time.Minute
)

type gateCause int

const (
	gateOpen gateCause = iota
	gateOutage
	gateCredential
)

func (c gateCause) String() string {
	switch c {
	case gateOutage:
		return "outage"
	case gateCredential:
		return "credential"
	}
	return "open"
}

// gate is the Pusher's view of APNs as a whole. It belongs to Run.
type gate struct {
	cause        gateCause
	failures     int             // answers in a row that suggest an outage
	failedTokens map[string]bool // devices among them (a few suffice)
	probes       int             // probes failed since the gate closed
	probeAt      time.Time       // when the next probe may go (cause != gateOpen)
	probing      bool            // a probe is in flight
	since        time.Time       // when the gate closed
	// reloaded: the credential was replaced while a probe with the old
	// one was out; its refusal says nothing of the new one.
	reloaded bool
}

// scope says what an answer means beyond its own push.
type scope int

const (
	scopeOwn        scope = iota // about this push or device only
	scopeOutage                  // suggests APNs as a whole is down
	scopeCredential              // the credential was refused
)

func answerScope(resp Response, err error) scope {
	switch {
	case err != nil, resp.StatusCode >= 500:
		return scopeOutage
	case resp.StatusCode == http.StatusForbidden,
		resp.StatusCode == http.StatusTooManyRequests && resp.Reason == apns2.ReasonTooManyProviderTokenUpdates:
		return scopeCredential
	}
	return scopeOwn
}

// closed reports whether pushes are held.
func (g *gate) closed() bool { return g.cause != gateOpen }

// observe takes the answer to one push (probe or not) at now. It returns
// true when the gate has just opened again after being closed: every push
// waiting should then go at once.
func (p *Pusher) observe(res Result, probe bool, now time.Time) (reopened bool) {
	g := &p.gate
	if probe {
		g.probing = false
	}
	switch answerScope(res.Response, res.Err) {
	case scopeOwn:
		g.failures, g.failedTokens = 0, nil
		if !g.closed() {
			return false
		}
		p.logger.Info("APNs is taking pushes again; sending the backlog",
			"cause", g.cause.String(), "held_for", now.Sub(g.since).Round(time.Millisecond).String(), "probes", g.probes)
		*g = gate{probing: g.probing} // a probe may still be out
		p.held.Store(int32(gateOpen))
		return true
	case scopeCredential:
		first := g.cause != gateCredential
		if g.cause == gateOpen {
			g.since = now
		}
		g.cause = gateCredential
		p.held.Store(int32(gateCredential))
		if probe || first {
			g.probes += boolInt(probe)
			g.probeAt = now.Add(p.credentialRecheck)
			if probe && g.reloaded {
				g.probeAt, g.reloaded = now, false
			}
		}
		if first {
			p.logger.Error("APNs refused the credential; holding every push and trying again periodically",
				"status", res.Outcome(), "recheck", p.credentialRecheck.String(),
				"fix", credentialFix(res.Response.Reason))
		}
	case scopeOutage:
		if g.cause == gateCredential {
			if probe { // the recheck found no answer: try again as planned
				g.probes++
				g.probeAt = now.Add(p.credentialRecheck)
			}
			return false
		}
		g.failures++
		if g.failedTokens == nil {
			g.failedTokens = map[string]bool{}
		}
		if len(g.failedTokens) < OutageAfter {
			g.failedTokens[res.DeviceToken] = true
		}
		if g.cause == gateOpen && (g.failures < OutageAfter || len(g.failedTokens) < 2) {
			return false // one device alone backs off alone
		}
		if g.cause == gateOpen {
			g.cause, g.since = gateOutage, now
			p.held.Store(int32(gateOutage))
			p.logger.Warn("APNs is not answering; holding pushes and probing until it does",
				"status", res.Outcome(), "failures", g.failures)
		}
		if probe || g.probeAt.IsZero() {
			g.probes += boolInt(probe)
			wait := p.retryBase << min(g.probes, 16)
			wait = min(wait, MaxProbeInterval)
			if ra := res.Response.RetryAfter; ra > wait {
				wait = ra
			}
			g.probeAt = now.Add(wait)
		}
	}
	return false
}

// CredentialReloaded tells the Pusher that the APNs credential was
// replaced (APNs.Reload): if pushes are held because APNs refused the old
// one, a probe goes at once rather than at the next CredentialRecheck,
// and when APNs takes it every held push follows. It never blocks.
func (p *Pusher) CredentialReloaded() {
	p.reloaded.Store(true)
	select {
	case p.wake <- struct{}{}:
	default: // a wake-up is already pending
	}
}

// recheckNow is CredentialReloaded's work, in Run.
func (g *gate) recheckNow(now time.Time) {
	if g.cause != gateCredential {
		return
	}
	if g.probing {
		g.reloaded = true
		return
	}
	g.probeAt = now
}

// probeDue reports whether a probe may be sent now.
func (g *gate) probeDue(now time.Time) bool {
	return g.closed() && !g.probing && !now.Before(g.probeAt)
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// credentialFix is what to tell the operator about a refused credential.
func credentialFix(reason string) string {
	switch reason {
	case apns2.ReasonBadCertificateEnvironment:
		return "the certificate is for the other APNs environment: set apns.endpoint to match it (Mail push certificates are production)"
	case apns2.ReasonExpiredProviderToken, apns2.ReasonInvalidProviderToken, apns2.ReasonMissingProviderToken:
		return "check apns.token_key_file, apns.key_id and apns.team_id, and that the key is not revoked"
	case apns2.ReasonTooManyProviderTokenUpdates:
		return "the provider token was renewed too often; it is reused for 50 minutes, so this clears by itself"
	}
	return "check that apns.certificate_file is a valid, unexpired, unrevoked APNs certificate for apns.topic (xapsproxy check shows it)"
}

// reopen makes every push that was waiting out its own backoff due now,
// once, after the gate opened again: the backlog drains at full speed.
func (p *Pusher) reopen(now time.Time) {
	n := 0
	for k, j := range p.jobs {
		if j.running || !j.due.After(now) {
			continue
		}
		if j.attempt > 0 {
			j.due = now
			p.queue(k, j)
			n++
		}
	}
	if n > 0 {
		p.logger.DebugContext(context.Background(), "retries made due after APNs came back", "pushes", n)
	}
}
