package dovecot_test

import (
	"fmt"
	"math"
	"net"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/xapsproxy/xapsproxy/dovecot"
	"github.com/xapsproxy/xapsproxy/event"
	"github.com/xapsproxy/xapsproxy/internal/dovecottest"
)

// benchMsg is a plain 3 KB mail: Dovecot reads its headers and the start
// of its body for the event (from, to, subject, snippet) whether the script
// uses them or not.
var benchMsg = "From: Sender <sender@example.com>\r\n" +
	"To: Alice <alice@example.com>\r\n" +
	"Subject: the weekly report\r\n" +
	"Date: Mon, 1 Jan 2024 10:00:00 +0000\r\n" +
	"Message-ID: <bench@example.com>\r\n" +
	"MIME-Version: 1.0\r\n" +
	"Content-Type: text/plain; charset=utf-8\r\n" +
	"\r\n" +
	strings.Repeat("Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do.\r\n", 45)

// BenchmarkLMTPDelivery times LMTP deliveries (MAIL FROM to the answer to
// DATA, over one kept LMTP connection per Dovecot) to three Dovecots side
// by side, in turn, so that the machine's load falls on all three alike:
//
//	off:  no plugins (as before)
//	on:   contrib/dovecot's snippet and script posting to the real Handler
//	down: the same posting to a port nothing listens on
//
// Each iteration delivers one mail to each. Run it with enough iterations
// for the tail percentiles, e.g.
//
//	go test -run XXX -bench LMTPDelivery -benchtime 1000x ./dovecot
//
// It reports the percentiles per Dovecot and what the hook adds at p50
// (goal: at most 2 ms); ns/op is the three deliveries together.
func BenchmarkLMTPDelivery(b *testing.B) {
	var hints atomic.Uint64
	h, err := dovecot.NewHandler(dovecot.Options{Secret: testSecret, Hint: func(event.Hint) { hints.Add(1) }})
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := dovecot.NewServer(h, nil)
	go srv.Serve(ln) // ends when Close closes the listener
	b.Cleanup(func() { srv.Close() })

	modes := []struct {
		name string
		d    *dovecottest.Dovecot
		l    *lmtp
		took []time.Duration
	}{
		{name: "off", d: dovecottest.Start(b, dovecottest.Options{})},
		{name: "on", d: startHooked(b, "http://"+ln.Addr().String()+dovecot.Path)},
		{name: "down", d: startHooked(b, downURL(b))},
	}
	for i := range modes {
		modes[i].l = dialLMTP(b, modes[i].d.LMTPAddr)
		for range 20 { // warm up: processes started, caches and indexes created
			modes[i].l.deliver(b, benchMsg, "alice@example.com")
		}
	}
	warm := hints.Load()
	b.ResetTimer()
	for range b.N {
		for i := range modes {
			modes[i].took = append(modes[i].took, modes[i].l.deliver(b, benchMsg, "alice@example.com"))
		}
	}
	b.StopTimer()
	if got := hints.Load() - warm; got != uint64(b.N) {
		b.Fatalf("%d hints for %d deliveries with the hook on", got, b.N)
	}

	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	var report strings.Builder
	fmt.Fprintf(&report, "%d deliveries each, ms:\n%-5s %7s %7s %7s %7s\n", b.N, "", "p50", "p90", "p99", "max")
	p := map[string][3]float64{}
	for _, m := range modes {
		slices.Sort(m.took)
		q := [3]float64{ms(percentile(m.took, 0.50)), ms(percentile(m.took, 0.90)), ms(percentile(m.took, 0.99))}
		p[m.name] = q
		fmt.Fprintf(&report, "%-5s %7.3f %7.3f %7.3f %7.3f\n", m.name, q[0], q[1], q[2], ms(m.took[len(m.took)-1]))
		b.ReportMetric(q[0], m.name+"-p50-ms")
		b.ReportMetric(q[2], m.name+"-p99-ms")
	}
	added := p["on"][0] - p["off"][0]
	b.ReportMetric(added, "added-p50-ms")
	fmt.Fprintf(&report, "the hook adds %.3f ms at p50 (%.2fx), %.3f ms at p90, %.3f ms at p99; down adds %.3f ms at p50\n",
		added, p["on"][0]/p["off"][0], p["on"][1]-p["off"][1], p["on"][2]-p["off"][2], p["down"][0]-p["off"][0])
	if b.N > 1 { // the testing package's first, one-iteration run says nothing
		b.Log(report.String())
	}
}

// percentile of sorted durations, nearest rank.
func percentile(sorted []time.Duration, q float64) time.Duration {
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[max(i, 0)]
}
