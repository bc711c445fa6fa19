package dovecot

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"unicode/utf8"

	"github.com/xapsproxy/xapsproxy/event"
)

// Limits on the names in a request. Dovecot's own are lower.
const (
	maxUserLen    = 1024
	maxMailboxLen = 4096
)

// request is the JSON body contrib/dovecot/xapsproxy.lua sends.
type request struct {
	User   string         `json:"user"`
	Events []requestEvent `json:"events"`
}

type requestEvent struct {
	Mailbox     string `json:"mailbox"`
	What        string `json:"what"`
	UIDValidity uint32 `json:"uidvalidity"`
	UIDNext     uint32 `json:"uidnext"`
}

var whats = map[string]event.What{
	"arrived":  event.Arrived,
	"flags":    event.Flags,
	"expunged": event.Expunged,
	"gone":     event.Gone,
	"unknown":  event.Unknown,
}

// read reads and checks the body. On failure it returns the status to
// answer and a short reason; hints are then nil.
func (h *Handler) read(w http.ResponseWriter, r *http.Request) (hints []event.Hint, status int, reason string) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.maxBody))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return nil, http.StatusRequestEntityTooLarge, fmt.Sprintf("body over %d bytes", h.maxBody)
		}
		return nil, http.StatusBadRequest, "reading the body failed"
	}
	hints, err = parse(body)
	if err != nil {
		return nil, http.StatusBadRequest, err.Error()
	}
	return hints, 0, ""
}

// parse decodes a body into hints, one per (mailbox, what): a repeated pair
// keeps the highest UIDNEXT and the last UIDVALIDITY given.
func parse(body []byte) ([]event.Hint, error) {
	if !utf8.Valid(body) {
		return nil, errors.New("body is not UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	var req request
	if err := dec.Decode(&req); err != nil {
		return nil, fmt.Errorf("bad JSON: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("bad JSON: data after the object")
	}
	if err := checkName("user", req.User, maxUserLen); err != nil {
		return nil, err
	}
	if len(req.Events) == 0 {
		return nil, errors.New("no events")
	}
	if len(req.Events) > maxEvents {
		return nil, fmt.Errorf("%d events, at most %d", len(req.Events), maxEvents)
	}
	type key struct {
		mailbox string
		what    event.What
	}
	index := make(map[key]int, len(req.Events))
	hints := make([]event.Hint, 0, len(req.Events))
	for i, e := range req.Events {
		what, ok := whats[e.What]
		if !ok {
			return nil, fmt.Errorf("events[%d]: what %q is not one of arrived, flags, expunged, gone, unknown", i, e.What)
		}
		if err := checkName(fmt.Sprintf("events[%d]: mailbox", i), e.Mailbox, maxMailboxLen); err != nil {
			return nil, err
		}
		k := key{e.Mailbox, what}
		if j, seen := index[k]; seen {
			if e.UIDValidity != 0 {
				hints[j].UIDValidity = e.UIDValidity
			}
			hints[j].UIDNext = max(hints[j].UIDNext, e.UIDNext)
			continue
		}
		index[k] = len(hints)
		hints = append(hints, event.Hint{
			User:        req.User,
			Mailbox:     e.Mailbox,
			What:        what,
			UIDValidity: e.UIDValidity,
			UIDNext:     e.UIDNext,
		})
	}
	return hints, nil
}

// checkName refuses an empty name and one over max bytes. Any character
// is taken: Dovecot refuses control characters in new mailbox names, but
// not in ones that already exist on disk.
func checkName(field, s string, max int) error {
	switch {
	case s == "":
		return fmt.Errorf("%s is missing or empty", field)
	case len(s) > max:
		return fmt.Errorf("%s is over %d bytes", field, max)
	}
	return nil
}
