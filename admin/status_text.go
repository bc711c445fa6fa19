package admin

import (
	"fmt"
	"io"
	"strings"
	"time"
	"unicode"
)

// WriteText writes r as `xapsproxy status` prints it.
func WriteText(w io.Writer, r Report) error {
	b := &strings.Builder{}
	now := r.Generated
	fmt.Fprintf(b, "user %s\n", r.User)
	if r.Topic != "" {
		fmt.Fprintf(b, "APNs topic %s\n", r.Topic)
	}
	fmt.Fprintf(b, "\nregistrations: %d\n", len(r.Registrations))
	for _, g := range r.Registrations {
		fmt.Fprintf(b, "  device %s  account %s  aps-version %d\n", g.Token, g.AccountID, g.Version)
		fmt.Fprintf(b, "    mailboxes: %s\n", strings.Join(g.Mailboxes, ", "))
		topic := g.Topic
		if g.TopicMismatch {
			topic += "  (NOT the certificate's topic)"
		}
		fmt.Fprintf(b, "    topic: %s\n", topic)
		stale := ""
		if g.Stale {
			stale = "  stale"
		}
		fmt.Fprintf(b, "    registered %s, renewed %s%s\n", when(g.Registered, now), when(g.Renewed, now), stale)
		if g.LastPush.IsZero() {
			fmt.Fprintf(b, "    last push: none\n")
		} else {
			fmt.Fprintf(b, "    last push: %s, %s\n", when(g.LastPush, now), g.LastPushResult)
		}
	}
	if r.Live {
		b.WriteString("\nwatcher: ")
		switch w := r.Watch; {
		case w == nil:
			b.WriteString("none (serve has no owner for this account: no registration, or not converged yet)\n")
		default:
			writeWatch(b, w, now)
		}
		fmt.Fprintf(b, "\nrecent pushes: %d\n", len(r.RecentPushes))
		for _, p := range r.RecentPushes {
			fmt.Fprintf(b, "  %s  device %s  %s  %s", when(p.At, now), p.Token, p.Kind, pushResultText(p.Status, p.Reason, p.Error))
			if p.APNsID != "" {
				fmt.Fprintf(b, "  apns-id %s", p.APNsID)
			}
			if len(p.Mailboxes) > 0 {
				fmt.Fprintf(b, "  mailboxes %s", strings.Join(p.Mailboxes, ", "))
			}
			b.WriteString("\n")
		}
	}
	fmt.Fprintf(b, "\noutbox (pushes owed): %d\n", len(r.Outbox))
	for _, e := range r.Outbox {
		fmt.Fprintf(b, "  %s  %s  since %s\n", e.Mailbox, e.Kind, when(e.At, now))
	}
	if len(r.Hints) > 0 {
		b.WriteString("\nwhat to check:\n")
		for _, h := range r.Hints {
			fmt.Fprintf(b, "  - %s\n", h)
		}
	}
	_, err := io.WriteString(w, Printable(b.String()))
	return err
}

// Printable shows control characters other than newlines, and Unicode
// format characters (bidi overrides, zero-width joiners), as \xNN or
// \uNNNN: user names, account ids and mailboxes come from clients, and must
// not be able to drive the operator's terminal (ANSI escapes) or make one
// name look like another when printed.
func Printable(s string) string {
	s = strings.ToValidUTF8(s, "\ufffd")
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == '\n':
			b.WriteRune(r)
		case unicode.IsControl(r): // C0 and C1, all below U+0100
			fmt.Fprintf(&b, "\\x%02x", r)
		case unicode.Is(unicode.Cf, r):
			fmt.Fprintf(&b, "\\u%04x", r)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

func writeWatch(b *strings.Builder, w *WatchReport, now time.Time) {
	if w.Connection {
		fmt.Fprintf(b, "%s (source %s) since %s\n", w.State, w.Source, when(w.Since, now))
	} else {
		fmt.Fprintf(b, "dovecot events: no backend connection (source %s)\n", w.Source)
	}
	if w.BackendUnreachable {
		b.WriteString("  the backend is unreachable\n")
	}
	fmt.Fprintf(b, "  mailboxes watched: %s\n", strings.Join(w.Mailboxes, ", "))
	if w.LastError != "" {
		fmt.Fprintf(b, "  last error: %s: %s\n", when(w.LastErrorAt, now), w.LastError)
	} else {
		b.WriteString("  last error: none\n")
	}
	if e := w.LastEvent; e != nil {
		fmt.Fprintf(b, "  last event: %s, %s, %s\n", when(e.At, now), e.Mailbox, e.Kind)
	} else {
		b.WriteString("  last event: none since serve started\n")
	}
}

// when is t in UTC, with how long ago.
func when(t, now time.Time) string {
	if t.IsZero() {
		return "never"
	}
	ago := now.Sub(t)
	s := t.UTC().Format("2006-01-02 15:04:05Z")
	switch {
	case ago < 0:
		return s
	case ago < time.Minute:
		return fmt.Sprintf("%s (%ds ago)", s, int(ago.Seconds()))
	case ago < time.Hour:
		return fmt.Sprintf("%s (%dm ago)", s, int(ago.Minutes()))
	case ago < 48*time.Hour:
		return fmt.Sprintf("%s (%dh ago)", s, int(ago.Hours()))
	}
	return fmt.Sprintf("%s (%dd ago)", s, int(ago.Hours()/24))
}
