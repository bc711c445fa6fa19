package cluster

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/xapsproxy/xapsproxy/event"
)

func TestDesiredSpreadsAndMovesLittle(t *testing.T) {
	three := []string{"a1", "b2", "c3"}
	four := append([]string{"d4"}, three...)
	count := map[string]int{}
	moved, movedElsewhere := 0, 0
	const n = 30000
	for i := range n {
		u := fmt.Sprintf("user%d@example.com", i)
		before, after := desired(u, three), desired(u, four)
		count[before]++
		if before != after {
			moved++
			if after != "d4" {
				movedElsewhere++
			}
		}
	}
	for _, id := range three {
		if c := count[id]; c < n/3*9/10 || c > n/3*11/10 {
			t.Errorf("instance %s owns %d of %d users, want about a third", id, c, n)
		}
	}
	if moved < n/4*9/10 || moved > n/4*11/10 {
		t.Errorf("a fourth instance took %d of %d users, want about a quarter", moved, n)
	}
	if movedElsewhere != 0 {
		t.Errorf("%d users moved between the old instances", movedElsewhere)
	}
	if desired("x", nil) != "" {
		t.Error("no live instance, yet an owner")
	}
	// The order of the live list does not matter.
	if desired("alice", []string{"a", "b", "c"}) != desired("alice", []string{"c", "a", "b"}) {
		t.Error("the owner depends on the order of the live list")
	}
}

func TestMessageRoundTripsAnyName(t *testing.T) {
	for _, name := range []string{"alice", "a\"b'c\n\\d", "\xff\xfe not utf-8", "\x00nul", strings.Repeat("é", 2000)} {
		k := keyOf(name)
		p, err := encode(message{Kind: kindHint, Key: k[:], Mailbox: []byte(name), What: event.Arrived, UIDNext: 7})
		if err != nil {
			t.Fatalf("encode %q: %v", name, err)
		}
		for _, r := range p {
			if r >= 0x80 || r == 0 {
				t.Fatalf("payload is not plain ASCII: %q", p)
			}
		}
		var c Cluster
		c.owned = map[string]*lease{}
		c.byKey = map[userKey]string{}
		var got []event.Hint
		c.opts.OnHint = func(h event.Hint) { got = append(got, h) }
		c.owned[name] = &lease{key: k, validUntil: farFuture}
		c.byKey[k] = name
		c.receive(p)
		if len(got) != 1 || got[0] != (event.Hint{User: name, Mailbox: name, What: event.Arrived, UIDNext: 7}) {
			t.Errorf("hint for %q arrived as %+v", name, got)
		}
	}
	k := keyOf("u")
	if _, err := encode(message{Kind: kindHint, Key: k[:], Mailbox: make([]byte, 6000)}); !errors.Is(err, ErrTooLarge) {
		t.Errorf("a 6000-byte mailbox (8000 in base64): %v, want ErrTooLarge", err)
	}
}
