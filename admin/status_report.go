package admin

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"time"

	"github.com/xapsproxy/xapsproxy/event"
	"github.com/xapsproxy/xapsproxy/push"
	"github.com/xapsproxy/xapsproxy/store"
	"github.com/xapsproxy/xapsproxy/watch"
)

// StaleAfter is how long a registration may go without a renewal before the
// status calls it stale: iOS renews at every IMAP session.
const StaleAfter = 30 * 24 * time.Hour

// Accounts is what the status page asks the watch manager.
type Accounts interface {
	Account(user string) (watch.AccountStatus, bool)
}

// PushStatus is what the status page asks the pusher: its recent pushes,
// and a test push.
type PushStatus interface {
	RecentPushes(user string) []push.RecentPush
	TestPush(ctx context.Context, user string) ([]push.Result, error)
}

// Report is everything the status page and `xapsproxy status` show about
// one user; its JSON form is /status.json. Device tokens appear in their
// short form only.
type Report struct {
	User      string    `json:"user"`
	Generated time.Time `json:"generated"`
	// Live is true when a running serve made the report: Watch and
	// RecentPushes are then what it knows now.
	Live          bool                 `json:"live"`
	Topic         string               `json:"topic,omitempty"` // the credential's topic, when known
	Registrations []RegistrationReport `json:"registrations"`
	Watch         *WatchReport         `json:"watch,omitempty"`
	RecentPushes  []PushReport         `json:"recent_pushes"`
	Outbox        []OutboxReport       `json:"outbox"`
	// Hints say what to check next, given the rest.
	Hints []string `json:"hints"`
}

// RegistrationReport is one device's registration.
type RegistrationReport struct {
	Token          string    `json:"token"` // store.ShortToken
	AccountID      string    `json:"account_id"`
	Mailboxes      []string  `json:"mailboxes"`
	Version        int       `json:"aps_version"`
	Topic          string    `json:"topic"`
	TopicMismatch  bool      `json:"topic_mismatch,omitempty"` // Topic is not the credential's
	Registered     time.Time `json:"registered"`
	Renewed        time.Time `json:"renewed"`
	Stale          bool      `json:"stale,omitempty"` // not renewed for StaleAfter
	LastPush       time.Time `json:"last_push,omitzero"`
	LastPushResult string    `json:"last_push_result,omitempty"`
}

// WatchReport is the account's event source and watcher.
type WatchReport struct {
	Source string `json:"source"`
	// Connection is false with Dovecot's own events: no backend
	// connection per account, so no State.
	Connection         bool         `json:"connection"`
	State              string       `json:"state,omitempty"`
	Since              time.Time    `json:"since,omitzero"`
	BackendUnreachable bool         `json:"backend_unreachable,omitempty"`
	Mailboxes          []string     `json:"mailboxes"`
	LastError          string       `json:"last_error,omitempty"`
	LastErrorAt        time.Time    `json:"last_error_at,omitzero"`
	LastEvent          *EventReport `json:"last_event,omitempty"`
}

// EventReport is the last event the account's owner reported.
type EventReport struct {
	At      time.Time `json:"at"`
	Mailbox string    `json:"mailbox"`
	Kind    string    `json:"kind"` // "new" or "changed"
}

// PushReport is one recent push.
type PushReport struct {
	At        time.Time `json:"at"`
	Token     string    `json:"token"`
	AccountID string    `json:"account_id"`
	Mailboxes []string  `json:"mailboxes"`
	Kind      string    `json:"kind"`
	Status    int       `json:"status,omitempty"`
	Reason    string    `json:"reason,omitempty"`
	APNsID    string    `json:"apns_id,omitempty"`
	Error     string    `json:"error,omitempty"`
	Action    string    `json:"action"`
}

// OutboxReport is a push still owed to the user's devices.
type OutboxReport struct {
	Mailbox string    `json:"mailbox"`
	Kind    string    `json:"kind"` // "new" or "changed"
	At      time.Time `json:"at"`
}

// Collect makes the report on user (canonical, as stored) from the store,
// and from the watch manager and the pusher when they are not nil (a
// running serve: the report is Live). topic is the credential's topic, ""
// if unknown.
func Collect(ctx context.Context, st store.Store, accounts Accounts, pushes PushStatus, user, topic string, now time.Time) (Report, error) {
	r := Report{User: user, Generated: now, Live: accounts != nil || pushes != nil, Topic: topic,
		Registrations: []RegistrationReport{}, RecentPushes: []PushReport{}, Outbox: []OutboxReport{}}
	regs, err := st.Registrations(ctx, user)
	if err != nil {
		return r, fmt.Errorf("registrations of %s: %w", user, err)
	}
	for _, g := range regs {
		r.Registrations = append(r.Registrations, RegistrationReport{
			Token: store.ShortToken(g.DeviceToken), AccountID: g.AccountID, Mailboxes: g.Mailboxes,
			Version: g.Version, Topic: g.Topic, TopicMismatch: topic != "" && g.Topic != "" && g.Topic != topic,
			Registered: g.Registered, Renewed: g.Renewed, Stale: now.Sub(g.Renewed) > StaleAfter,
			LastPush: g.LastPush, LastPushResult: g.LastPushResult,
		})
	}
	outbox, err := st.OutboxOf(ctx, user)
	if err != nil {
		return r, fmt.Errorf("outbox of %s: %w", user, err)
	}
	for _, e := range outbox {
		r.Outbox = append(r.Outbox, OutboxReport{Mailbox: e.Mailbox, Kind: kindName(e.Changed), At: e.At})
	}
	if accounts != nil {
		if a, ok := accounts.Account(user); ok {
			r.Watch = watchReport(a)
		}
	}
	if pushes != nil {
		for _, p := range pushes.RecentPushes(user) {
			r.RecentPushes = append(r.RecentPushes, PushReport{
				At: p.At, Token: p.Token, AccountID: p.AccountID, Mailboxes: p.Mailboxes, Kind: p.Kind,
				Status: p.Status, Reason: p.Reason, APNsID: p.APNsID, Error: p.Error, Action: p.Action.String(),
			})
		}
	}
	r.Hints = hints(&r)
	return r, nil
}

func kindName(changed bool) string {
	if changed {
		return "changed"
	}
	return "new"
}

func watchReport(a watch.AccountStatus) *WatchReport {
	w := &WatchReport{Source: a.Source, Connection: a.Connection, BackendUnreachable: a.BackendUnreachable,
		Mailboxes: a.Mailboxes, LastError: a.LastError, LastErrorAt: a.LastErrorAt}
	if a.Connection {
		w.State, w.Since = a.State.String(), a.Since
	}
	if !a.LastEvent.At.IsZero() {
		w.LastEvent = &EventReport{At: a.LastEvent.At, Mailbox: a.LastEvent.Mailbox, Kind: kindName(a.LastEvent.Kind == event.KindChanged)}
	}
	return w
}

// The phone's side, once Apple has taken a push.
var phoneChecklist = []string{
	"Settings > Mail > Accounts > Fetch New Data: Push is on, and this account is set to Push (not Fetch or Manual).",
	"Low Power Mode is off: it pauses push.",
	"The phone reaches Apple: courier.push.apple.com, port 5223 (or 443); some Wi-Fi networks block it, try mobile data.",
	"The device registered after the proxy started answering XAPPLEPUSHSERVICE: see its registration time; removing and adding the account, or opening Mail, registers it again.",
	"The topic the device registered with is the certificate's topic (xapsproxy cert).",
	"iOS only uses push for the mailboxes it registered (the mailboxes list); other folders are fetched on its own schedule.",
}

// hints says what to look at, from what the report found.
func hints(r *Report) []string {
	var out []string
	if len(r.Registrations) == 0 {
		return []string{
			"No device registered for this user: the phone never asked the proxy for push.",
			"Is the account set up with the proxy's host name as its IMAP server (not the mail server's own)?",
			"Does serve log \"device registered\" with this user when Mail opens the account? If it logs \"registration refused\" or \"registration not stored\", that is why.",
			"The user name must be the one the phone logs in with (after backend.username_format).",
		}
	}
	for _, g := range r.Registrations {
		if g.TopicMismatch {
			out = append(out, fmt.Sprintf("Device %s registered for topic %s, not the certificate's %s: it pushes to another server's certificate; it registers again at its next IMAP session.", g.Token, g.Topic, r.Topic))
		}
		if g.Stale {
			out = append(out, fmt.Sprintf("Device %s has not renewed its registration for over 30 days: the phone may no longer use this account through the proxy.", g.Token))
		}
	}
	if w := r.Watch; w != nil {
		switch {
		case w.BackendUnreachable:
			out = append(out, "The backend IMAP server does not answer: no mail is seen until it does.")
		case w.Connection && w.State != watch.StateWatching.String():
			out = append(out, fmt.Sprintf("The account's watcher is %s, not watching: new mail is not seen until it is (last error below).", w.State))
		}
	}
	accepted, failed := false, map[string]bool{}
	results := []string{}
	for _, p := range r.RecentPushes {
		results = append(results, pushResultText(p.Status, p.Reason, p.Error))
	}
	if len(results) == 0 { // the store's last results: serve is not running, or restarted since
		for _, g := range r.Registrations {
			if g.LastPushResult != "" {
				results = append(results, g.LastPushResult)
			}
		}
	}
	for _, res := range results {
		if res == "200" {
			accepted = true
		} else {
			failed[res] = true
		}
	}
	for _, res := range slices.Sorted(maps.Keys(failed)) {
		out = append(out, failureHint(res))
	}
	if accepted || len(results) == 0 {
		if accepted {
			out = append(out, "Apple accepted pushes (200): if the phone still does nothing, check on the phone:")
		} else {
			out = append(out, "No push was sent yet: send a test push; if Apple accepts it (200) and the phone does nothing, check on the phone:")
		}
		out = append(out, phoneChecklist...)
	}
	return out
}

// pushResultText is a push's result as the store records it: "200",
// "410 Unregistered", "error: ...".
func pushResultText(status int, reason, errText string) string {
	switch {
	case errText != "":
		return "error: " + errText
	case reason != "":
		return fmt.Sprintf("%d %s", status, reason)
	}
	return fmt.Sprint(status)
}

// failureHint explains a failed push's result.
func failureHint(res string) string {
	var status int
	var reason string
	fmt.Sscanf(res, "%d %s", &status, &reason)
	switch {
	case len(res) >= 6 && res[:6] == "error:":
		return "Pushes got no answer from Apple (" + res + "): Apple or the way to it is down; pushes are held and retried."
	case status == http.StatusGone || reason == "BadDeviceToken":
		return res + ": the device token is gone and its registration was pruned; the device registers again at its next IMAP session."
	case reason == "DeviceTokenNotForTopic":
		return res + ": the device registered for another topic than the certificate's (another server's certificate, or this one changed)."
	case status == http.StatusForbidden:
		return res + ": Apple refused the certificate or token: check it with `xapsproxy cert`; every push is held until Apple takes it."
	case status == http.StatusTooManyRequests || status >= 500:
		return res + ": Apple asked to wait or failed; the push is retried."
	}
	return res + ": Apple does not take this push as sent; the registration is kept."
}
