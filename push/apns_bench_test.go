package push_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/xapsproxy/xapsproxy/config"
	"github.com/xapsproxy/xapsproxy/internal/apnstest"
	"github.com/xapsproxy/xapsproxy/internal/testpki"
	"github.com/xapsproxy/xapsproxy/push"
)

// BenchmarkAPNsSend pushes through the real client to the fake, 500 pushes
// in flight (the default apns.concurrency) over 2 connections (the default
// apns.connections), fake and client sharing the machine's cores.
func BenchmarkAPNsSend(b *testing.B) {
	for _, conns := range []int{1, 2, 4} {
		b.Run(map[int]string{1: "1conn", 2: "2conns", 4: "4conns"}[conns], func(b *testing.B) {
			e := newAPNsEnvTB(b)
			e.fake.SetRecord(false)
			a := newSender(b, e, conns)
			var next atomic.Int64
			var wg sync.WaitGroup
			start := time.Now()
			b.ResetTimer()
			for range 500 {
				wg.Go(func() {
					for i := next.Add(1); i <= int64(b.N); i = next.Add(1) {
						if resp, err := a.Send(context.Background(), note(int(i%255)+1)); err != nil || resp.StatusCode != 200 {
							b.Errorf("push: %+v, %v", resp, err)
							return
						}
					}
				})
			}
			wg.Wait()
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "pushes/s")
			if got := e.fake.Answered(); got != b.N {
				b.Errorf("%d answered, want %d", got, b.N)
			}
		})
	}
}

// newAPNsEnvTB is newAPNsEnv for benchmarks too, without its sender.
func newAPNsEnvTB(tb testing.TB) *apnsEnv {
	tb.Helper()
	ca := testpki.NewCA(tb)
	e := &apnsEnv{ca: ca, fake: apnstest.Start(tb, ca, testTopic), cert: ca.ClientCert(tb, testTopic)}
	dir := tb.TempDir()
	e.cfg = config.APNS{
		CertificateFile: testpki.WriteCombinedPEM(tb, dir, "apns", e.cert),
		Endpoint:        e.fake.URL,
		CAFile:          ca.WriteCA(tb, dir),
	}
	var err error
	if e.creds, err = push.LoadCredentials(e.cfg, time.Now()); err != nil {
		tb.Fatal(err)
	}
	return e
}
