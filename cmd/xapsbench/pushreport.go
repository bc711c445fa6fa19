package main

import (
	"fmt"
	"strings"
	"time"
)

func ms(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e6 }

// msStats is p50, p90 and max of sorted d in ms, or dashes when empty.
func msStats(d []time.Duration) [3]string {
	if len(d) == 0 {
		return [3]string{"-", "-", "-"}
	}
	return [3]string{fmt.Sprintf("%.1f", ms(percentile(d, 50))), fmt.Sprintf("%.1f", ms(percentile(d, 90))),
		fmt.Sprintf("%.1f", ms(d[len(d)-1]))}
}

func (p *pushResult) print(r *report) {
	r.f("Push: a device registered for %s through xapsproxy as iPhone Mail does (XAPPLEPUSHSERVICE, INBOX); %d small", p.user, p.deliveries)
	r.f("mails delivered over LMTP one at a time, each %v after the previous one's push and EXISTS; ms from the delivery", pushGap)
	r.f("(Deliver returning: Dovecot's reply to LMTP DATA, then QUIT) to * N EXISTS at a plain IMAP client IDLEing directly")
	r.f("on Dovecot (Dovecot's own notification latency), and to xapsproxy's APNs request arriving at the fake APNs in the")
	r.f("bench (the time a phone waits, less the trip to Apple and on to the phone)")
	r.f("  %-38s %8s %8s %8s %9s", "path", "p50", "p90", "max", "received")
	e, x := msStats(p.exists), msStats(p.push)
	r.f("  %-38s %8s %8s %8s %9s", "direct: delivery -> IDLE EXISTS", e[0], e[1], e[2], fmt.Sprintf("%d/%d", len(p.exists), p.deliveries))
	r.f("  %-38s %8s %8s %8s %9s", "xapsproxy: delivery -> APNs request", x[0], x[1], x[2], fmt.Sprintf("%d/%d", len(p.push), p.deliveries))
	if len(p.cost) > 0 {
		r.f("  xapsproxy's own cost (APNs request - direct EXISTS, per delivery with both, n=%d): p50 %+.1f ms, max %+.1f ms",
			len(p.cost), ms(percentile(p.cost, 50)), ms(p.cost[len(p.cost)-1]))
	}
	r.f("  (Dovecot runs without IDLE hibernation and then delays every IDLE notification by 500 ms: both rows include")
	r.f("  that wait, each IDLE connection with its own timer. On the EXISTS, xapsproxy's watcher ends IDLE, EXAMINEs")
	r.f("  INBOX, compares and stores UIDNEXT, and its pusher POSTs over an HTTP/2 connection kept open since the warm-up)")
	r.f("  fake APNs: %d request(s), warm-up included, over %d TLS connection(s) (%s), client certificate required and verified;",
		p.requests, p.conns, p.tlsState)
	r.f("  warm-up: first push %.2f s after registering, %d deliver%s (the first %v after registering); LMTP delivery itself p50 %.1f ms",
		p.firstPush.Seconds(), p.warmups, map[bool]string{true: "y", false: "ies"}[p.warmups == 1], registerPause, ms(percentile(p.lmtp, 50)))
	if p.errors() == 0 {
		r.f("  errors: none (every request POST /3/device/<token> over HTTP/2, apns-topic %s, apns-push-type background,", apnsTopic)
		r.f("  body {\"aps\":{\"account-id\":\"%s\",\"m\":[\"%s\"]}}, m naming INBOX)", pushAccountID, pushMailboxHash)
		return
	}
	r.f("  ERRORS: %d missing push(es)%s, %d missing EXISTS%s, %d push(es) matching no delivery, %d malformed request(s)",
		len(p.missing), which(p.missing), len(p.noExists), which(p.noExists), p.extra, len(p.problems))
	for i, pr := range p.problems {
		if i == 10 {
			r.f("    ... and %d more", len(p.problems)-i)
			break
		}
		r.f("    %s", pr)
	}
}

// which lists delivery numbers, e.g. " (deliveries 3, 17)".
func which(deliveries []int) string {
	if len(deliveries) == 0 {
		return ""
	}
	s := make([]string, len(deliveries))
	for i, d := range deliveries {
		s[i] = fmt.Sprint(d)
	}
	return " (deliveries " + strings.Join(s, ", ") + ")"
}

// summary is the push figures in one line, for the end of the report.
func (p *pushResult) summary() string {
	x, e := msStats(p.push), msStats(p.exists)
	s := fmt.Sprintf("p50 %s / p90 %s / max %s ms (Dovecot's own EXISTS p50 %s ms", x[0], x[1], x[2], e[0])
	if len(p.cost) > 0 {
		s += fmt.Sprintf("; xapsproxy adds %+.1f ms p50, %+.1f max", ms(percentile(p.cost, 50)), ms(p.cost[len(p.cost)-1]))
	}
	s += ")"
	if n := p.errors(); n > 0 {
		s += fmt.Sprintf("; %d ERROR(S)", n)
	}
	return s
}
