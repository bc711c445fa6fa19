// Package push wakes iPhone Mail through the Apple Push Notification service
// (APNs). Watchers report mailbox events to a Pusher (a event.Notifier); the
// Pusher finds the registrations that asked for that mailbox and sends each
// one background push whose body names the device's account id and the
// mailboxes with news (see Payload), so that Mail connects and fetches them.
// New mail is pushed at once; flag changes and expunges wait until the
// mailboxes have been quiet for ChangeDelay, and a push sent meanwhile takes
// them along. It retries what APNs could not take and prunes device tokens
// APNs says are gone.
//
// Credentials (LoadCredentials) come from an APNs certificate (.pem or .p12)
// or a .p8 token key; APNs (NewAPNs) sends over a few long-lived HTTP/2
// connections; LogSender stands in for it in demo mode. A push is owed
// until APNs answers it: events come with their entry in the store's
// outbox, which the Pusher empties as APNs answers (outbox.go), and while
// APNs is down or refuses the credential every push is held behind a gate
// (gate.go).
package push

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sideshow/apns2"

	"github.com/xapsproxy/xapsproxy/event"
	"github.com/xapsproxy/xapsproxy/store"
)

// Defaults for zero Options fields.
const (
	DefaultChangeDelay   = 30 * time.Second
	DefaultRetryBase     = time.Second
	DefaultRetryMax      = 5 * time.Minute
	DefaultExpiration    = 24 * time.Hour
	DefaultMaxConcurrent = 500
	DefaultSendTimeout   = 30 * time.Second
)

// Options configure a Pusher. Store and Sender are required; every other
// field has a default for its zero value.
type Options struct {
	Store  store.Store // registrations; push outcomes are recorded here
	Sender Sender      // APNs, or LogSender in demo mode
	// Logger receives one line per push and per problem; nil = slog.Default().
	Logger *slog.Logger

	// OnPrune is called with each user whose registration was deleted because
	// APNs said the device token is gone (410, or 400 BadDeviceToken), after
	// the store has dropped it. It is called from the Pusher's goroutines
	// (or PushUser's caller), possibly concurrently, and must not block long.
	// nil = nothing to call.
	OnPrune func(user string)

	// Topic is the apns-topic for registrations that stored none; normally
	// the credentials' topic. "" = leave such pushes without a topic.
	Topic string

	// ChangeDelay is how long a KindChanged event waits for quiet: one push
	// per registration goes out this long after its last change, unless new
	// mail is pushed first, which then carries the changes too.
	// 0 = DefaultChangeDelay (30s).
	ChangeDelay time.Duration
	// ChangeInterval is the storm guard: a push for changes alone goes to
	// a registration at most once per ChangeInterval (counted from its last
	// push of any kind), however many changes come; new mail is never held
	// back by it. 0 = no guard.
	ChangeInterval time.Duration
	// RetryBase is the first retry delay after 429, 5xx or a transport
	// error; it doubles per attempt, with jitter. 0 = DefaultRetryBase (1s).
	RetryBase time.Duration
	// RetryMax caps the retry delay. 0 = DefaultRetryMax (5m).
	RetryMax time.Duration
	// Expiration is how long a notification stays valid (apns-expiration)
	// and is retried. 0 = DefaultExpiration (24h).
	Expiration time.Duration
	// MaxConcurrent bounds the pushes in flight at once.
	// 0 = DefaultMaxConcurrent (500, as apns.concurrency).
	MaxConcurrent int
	// OmitMailboxes leaves the "m" array (the mailboxes with news) out of
	// every payload, as the original open-source daemon did. Only for a
	// device that misbehaves with it: without it Mail is not told which
	// folder changed.
	OmitMailboxes bool
	// Priority is every push's apns-priority; 0 = no header (APNs then
	// assumes 10), as the reference daemon sends.
	Priority int
	// SendTimeout bounds one push, from the request to APNs's answer: one
	// that takes longer counts as no answer (and towards an outage).
	// 0 = DefaultSendTimeout (30s).
	SendTimeout time.Duration
	// CredentialRecheck is how long pushes are held after APNs refused the
	// credential (403) before one push tries it again.
	// 0 = DefaultCredentialRecheck (1m).
	CredentialRecheck time.Duration
	// Clock gives the time for timestamps and schedules and the timer Run
	// waits on. nil = the real clock.
	Clock Clock
	// Owns, when set, says whether this instance owns user (several
	// instances share the accounts, see package cluster): the Pusher then
	// reads no outbox at start, drops events of users it does not own,
	// and sends a user's owed pushes when told with Claim (see claim.go).
	// nil = every user is this instance's.
	Owns func(user string) bool
	// SendLatency, if set, is given the seconds from handing a push to
	// the Sender to APNs's answer, for every push answered (those that got
	// no answer are not). It is called from many workers at once
	// (a prometheus.Histogram will do). nil = not measured.
	SendLatency Observer
}

// Observer takes one measurement; prometheus.Histogram is one.
type Observer interface {
	Observe(float64)
}

// Pusher turns mailbox events into APNs pushes. Create it with New, start
// Run, and hand it to watchers as their event.Notifier.
type Pusher struct {
	store             store.Store
	sender            Sender
	logger            *slog.Logger
	onPrune           func(string)
	topic             string
	changeDelay       time.Duration
	changeEvery       time.Duration
	retryBase         time.Duration
	retryMax          time.Duration
	expiration        time.Duration
	maxConcurrent     int
	omitMailboxes     bool
	priority          int
	clock             Clock
	credentialRecheck time.Duration
	sendTimeout       time.Duration
	sendLatency       Observer
	ownsFn            func(string) bool

	wake    chan struct{} // 1-buffered: "events are waiting"
	running atomic.Bool   // a Run is active
	rec     *recorder     // batched writes of outcomes and finished outbox entries
	answers answerCounts  // for Stats
	held    atomic.Int32  // the gate's cause, for Stats
	workers atomic.Int32  // worker goroutines alive, for Stats
	recent  *recentLog    // the last pushes per user, for the status page (recent.go)
	// reloaded is set by CredentialReloaded, for Run.
	reloaded atomic.Bool

	mu        sync.Mutex
	events    map[eventKey]eventState // reported, not yet looked up
	resolving int                     // events being looked up by Run
	jobCount  int                     // len(jobs), for Pending
	// With Options.Owns (claim.go):
	ctl           []ctlReq                         // Claims and Releases for Run, in order
	claimOpen     map[string]int                   // Claims of a user between their read and Run
	claimFinished map[string]map[mailboxKind]int64 // from Claim to Release: the newest entry finished

	// Owned by the active Run (handed over through running).
	jobs          map[jobKey]*job
	due           dueHeap        // when each waiting job is due
	gen           uint64         // the last generation given to a due entry
	refs          map[int64]int  // outbox id -> jobs holding it (see outbox.go)
	jobsPeak      int            // the most jobs since the map was made (see shrink)
	refsPeak      int            // the most refs since the map was made
	outboxLoaded  bool           // loadOutbox has read the outbox (once per Pusher)
	finishedEarly map[int64]bool // ids finished before that, not to be read back
	storeRetryAt  time.Time      // look events up again after a store error
	storeErrors   int
	gate          gate                    // APNs as a whole: open, or holding pushes (see gate.go)
	releasing     map[string]*releaseWait // Releases waiting for pushes in flight
	inResolve     map[eventKey]eventState // the batch being looked up, for Claim
}

// eventKey and eventState are what Notify keeps: per (user, mailbox),
// whether new mail arrived and when the latest change was seen.
type eventKey struct{ user, mailbox string }

type eventState struct {
	isNew     bool
	changedAt time.Time // zero if no KindChanged
	newID     int64     // outbox entry of the new mail, 0 if none
	changedID int64     // outbox entry of the changes, 0 if none
}

func (s *eventState) merge(o eventState) {
	s.isNew = s.isNew || o.isNew
	if o.changedAt.After(s.changedAt) {
		s.changedAt = o.changedAt
	}
	s.newID = max(s.newID, o.newID)
	s.changedID = max(s.changedID, o.changedID)
}

var _ event.Notifier = (*Pusher)(nil)

// New makes a Pusher. It does no I/O; nothing is sent until Run.
func New(opts Options) *Pusher {
	p := &Pusher{
		store:             opts.Store,
		sender:            opts.Sender,
		logger:            opts.Logger,
		onPrune:           opts.OnPrune,
		topic:             opts.Topic,
		changeDelay:       orDefault(opts.ChangeDelay, DefaultChangeDelay),
		changeEvery:       opts.ChangeInterval,
		retryBase:         orDefault(opts.RetryBase, DefaultRetryBase),
		retryMax:          orDefault(opts.RetryMax, DefaultRetryMax),
		expiration:        orDefault(opts.Expiration, DefaultExpiration),
		maxConcurrent:     opts.MaxConcurrent,
		omitMailboxes:     opts.OmitMailboxes,
		priority:          opts.Priority,
		credentialRecheck: orDefault(opts.CredentialRecheck, DefaultCredentialRecheck),
		sendTimeout:       orDefault(opts.SendTimeout, DefaultSendTimeout),
		sendLatency:       opts.SendLatency,
		ownsFn:            opts.Owns,
		claimOpen:         map[string]int{},
		claimFinished:     map[string]map[mailboxKind]int64{},
		clock:             opts.Clock,
		wake:              make(chan struct{}, 1),
		events:            map[eventKey]eventState{},
		jobs:              map[jobKey]*job{},
		refs:              map[int64]int{},
	}
	if p.logger == nil {
		p.logger = slog.Default()
	}
	p.rec = newRecorder(p.store, p.logger)
	p.recent = newRecentLog(RecentPerUser, RecentUsers)
	if p.maxConcurrent <= 0 {
		p.maxConcurrent = DefaultMaxConcurrent
	}
	if p.clock == nil {
		p.clock = realClock{}
	}
	if p.retryMax < p.retryBase {
		p.retryMax = p.retryBase
	}
	return p
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// Notify records an event for Run to push. It never blocks (beyond a short
// mutex) and never drops: events are merged per (user, mailbox) until Run
// looks them up, so memory is bounded by the number of watched mailboxes.
// Events reported while Run is not running wait for the next Run. An event
// of unknown kind is treated as KindNew. With Options.Owns, an event of a
// user not owned is dropped.
func (p *Pusher) Notify(ev event.Event) {
	if !p.owns(ev.User) {
		return // its outbox entry is the next owner's
	}
	st := eventState{isNew: true, newID: ev.ID}
	if ev.Kind == event.KindChanged {
		st = eventState{changedAt: p.clock.Now(), changedID: ev.ID}
	}
	p.mu.Lock()
	k := eventKey{ev.User, ev.Mailbox}
	cur := p.events[k]
	cur.merge(st)
	p.events[k] = cur
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default: // a wake-up is already pending
	}
}

// Pending reports how much work is outstanding: events not yet looked up,
// registrations with a push waiting, in flight or retrying, and outcomes not
// yet written to the store. It is 0 when the Pusher is idle.
func (p *Pusher) Pending() int {
	p.mu.Lock()
	n := len(p.events) + p.resolving + p.jobCount
	p.mu.Unlock()
	return n + p.rec.pending()
}

// Action is what a push outcome means for its registration.
type Action int

const (
	// Delivered: APNs accepted the push (200).
	Delivered Action = iota + 1
	// Pruned: APNs said the token is gone (410, 400 BadDeviceToken); every
	// registration of the token was deleted.
	Pruned
	// Rejected: another 4xx (e.g. 400 DeviceTokenNotForTopic, 413
	// PayloadTooLarge); the registration is kept and the push is not
	// retried.
	Rejected
	// Retry: 403 (the credential was refused), 429, 5xx or no answer; the
	// Pusher tries again later (see gate.go for how it waits).
	Retry
)

func (a Action) String() string {
	switch a {
	case Delivered:
		return "delivered"
	case Pruned:
		return "pruned"
	case Rejected:
		return "rejected"
	case Retry:
		return "retry"
	}
	return "unknown"
}

// Result is the outcome of one push to one registration.
type Result struct {
	User        string
	DeviceToken string
	AccountID   string
	Response    Response // APNs's answer; zero when Err is set
	Err         error    // no answer from APNs (connection, TLS, timeout)
	Action      Action
}

// Outcome is the text recorded in the store: "200", "410 Unregistered",
// "error: <message>".
func (r Result) Outcome() string {
	if r.Err != nil {
		return "error: " + r.Err.Error()
	}
	return r.Response.String()
}

func classify(resp Response, err error) Action {
	switch {
	case err != nil:
		return Retry
	case resp.StatusCode == http.StatusOK:
		return Delivered
	case resp.StatusCode == http.StatusGone,
		resp.StatusCode == http.StatusBadRequest && resp.Reason == apns2.ReasonBadDeviceToken:
		return Pruned
	case resp.StatusCode == http.StatusTooManyRequests, resp.StatusCode >= 500,
		resp.StatusCode == http.StatusForbidden:
		return Retry
	}
	return Rejected
}

// PushUser sends one push, now and without retrying, to every registration
// of user, whatever its mailboxes, and returns one Result per registration
// (none if the user has no registration). Each push names the
// registration's INBOX, or its first mailbox if it has no INBOX. Outcomes
// are recorded and dead tokens pruned as for any push. It does not need Run.
func (p *Pusher) PushUser(ctx context.Context, user string) ([]Result, error) {
	regs, err := p.store.Registrations(ctx, user)
	if err != nil {
		return nil, fmt.Errorf("registrations of %s: %w", user, err)
	}
	expires := p.clock.Now().Add(p.expiration)
	results := make([]Result, 0, len(regs))
	for _, reg := range regs {
		n := p.notification(reg, expires, []string{testMailbox(&reg)})
		results = append(results, p.pushOnce(ctx, reg, n, false, PushTest))
	}
	return results, nil
}

// notification is the push for reg about mailboxes (registered names,
// sorted and bounded by the caller); they are left out with OmitMailboxes.
func (p *Pusher) notification(reg store.Registration, expires time.Time, mailboxes []string) Notification {
	topic := reg.Topic
	if topic == "" {
		topic = p.topic
	}
	if p.omitMailboxes {
		mailboxes = nil
	}
	return Notification{DeviceToken: reg.DeviceToken, Topic: topic, AccountID: reg.AccountID, Expiration: expires, Mailboxes: mailboxes, Priority: p.priority}
}

// pushOnce sends n (a push of kind, see RecentPush) for reg, records the
// outcome (through the recorder when batched, else at once; and among the
// recent pushes) and prunes a dead token. It records nothing when ctx was
// cancelled during the send (shutdown); once APNs has answered, the
// bookkeeping is done even if ctx is cancelled.
func (p *Pusher) pushOnce(ctx context.Context, reg store.Registration, n Notification, batched bool, kind string) Result {
	sctx, cancel := context.WithTimeout(ctx, p.sendTimeout)
	start := time.Now() // the real clock: a latency, not a schedule
	resp, err := p.sender.Send(sctx, n)
	if err == nil && p.sendLatency != nil {
		p.sendLatency.Observe(time.Since(start).Seconds())
	}
	cancel()
	res := Result{User: reg.User, DeviceToken: reg.DeviceToken, AccountID: reg.AccountID, Response: resp, Err: err}
	if err != nil {
		res.Response = Response{}
	}
	res.Action = classify(res.Response, err)
	if err == nil || ctx.Err() == nil {
		p.answers.add(res)
	}
	log := regLog{p.logger, reg.User, reg.DeviceToken, reg.AccountID}
	if err != nil && ctx.Err() != nil {
		log.log(ctx, slog.LevelDebug, "push interrupted by shutdown", "error", err)
		return res
	}
	// APNs answered: book-keep even if shutdown starts now.
	ctx = context.WithoutCancel(ctx)
	p.recent.record(p.clock.Now(), res, n, kind)
	if batched {
		p.rec.record(store.PushRecord{User: reg.User, DeviceToken: reg.DeviceToken, At: p.clock.Now(), Result: res.Outcome()})
	} else if rerr := p.store.RecordPush(ctx, reg.User, reg.DeviceToken, p.clock.Now(), res.Outcome()); rerr != nil && !errors.Is(rerr, store.ErrNotFound) {
		log.log(ctx, slog.LevelWarn, "cannot record push outcome", "error", rerr)
	}
	status := res.Outcome()
	switch res.Action {
	case Delivered:
		log.log(ctx, slog.LevelInfo, "push delivered", "status", status, "apns_id", res.Response.APNsID, "mailboxes", len(n.Mailboxes))
	case Rejected:
		log.log(ctx, slog.LevelWarn, "push rejected by APNs; registration kept", "status", status, "why", rejectedWhy(res.Response))
	case Retry:
		log.log(ctx, slog.LevelWarn, "push failed; will retry", "status", status)
	case Pruned:
		users, derr := p.store.DeleteToken(ctx, reg.DeviceToken)
		if derr != nil {
			log.log(ctx, slog.LevelError, "APNs says the device token is gone, but deleting it failed", "status", status, "error", derr)
			break
		}
		log.log(ctx, slog.LevelInfo, "device token is gone; registration deleted", "status", status, "users", len(users))
		if p.onPrune != nil {
			for _, u := range users {
				p.onPrune(u)
			}
		}
	}
	return res
}

// rejectedWhy explains an answer that ends a push but keeps its
// registration.
func rejectedWhy(r Response) string {
	switch {
	case r.Reason == apns2.ReasonDeviceTokenNotForTopic:
		return "the device registered for another topic (another server's certificate, or this one's changed); it registers again at its next IMAP session"
	case r.StatusCode == http.StatusRequestEntityTooLarge:
		return "the push is larger than APNs takes (4 KiB)"
	case r.Reason == apns2.ReasonTopicDisallowed, r.Reason == apns2.ReasonBadTopic, r.Reason == apns2.ReasonMissingTopic:
		return "the topic is not one the credential may push to: check apns.topic"
	}
	return "APNs does not take this push as sent"
}
