package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/xapsproxy/xapsproxy/config"
	"github.com/xapsproxy/xapsproxy/push"
)

func TestMakeMessage(t *testing.T) {
	for _, size := range []int{1024, 4097, 1 << 20} {
		msg := makeMessage(7, size)
		if len(msg) != size {
			t.Errorf("size %d: got %d bytes", size, len(msg))
		}
		if !bytes.HasSuffix(msg, []byte("\r\n")) || bytes.Contains(bytes.ReplaceAll(msg, []byte("\r\n"), nil), []byte("\n")) {
			t.Errorf("size %d: not CRLF throughout", size)
		}
		for _, line := range bytes.Split(msg, []byte("\r\n")) {
			if len(line) > 998 {
				t.Fatalf("size %d: line of %d bytes", size, len(line))
			}
		}
	}
	if !bytes.Equal(makeMessage(3, 5000), makeMessage(3, 5000)) {
		t.Error("not deterministic")
	}
}

func TestPercentile(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 100; i++ {
		d = append(d, time.Duration(i))
	}
	if p := percentile(d, 50); p != 50 {
		t.Errorf("p50 = %d", p)
	}
	if p := percentile(d, 99); p != 99 {
		t.Errorf("p99 = %d", p)
	}
	if p := percentile(d[:1], 99); p != 1 {
		t.Errorf("p99 of one = %d", p)
	}
}

func TestParseVmRSS(t *testing.T) {
	kib, err := parseVmRSS(strings.NewReader("Name:\txapsproxy\nVmPeak:\t  1 kB\nVmRSS:\t   23456 kB\n"))
	if err != nil || kib != 23456 {
		t.Errorf("parseVmRSS = %d, %v", kib, err)
	}
	if _, err := parseVmRSS(strings.NewReader("Name:\tx\n")); err == nil {
		t.Error("no VmRSS line: no error")
	}
}

func TestXapsproxyConfigLoads(t *testing.T) {
	p, err := newPKI(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	doc := xapsproxyConfig(p, "/tmp/x.db", instance{backend: "127.0.0.1:143"})
	cfg, err := config.Parse(doc, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Proxy.MaxConnections != 0 || cfg.Proxy.MaxConnectionsPerIP != 0 || cfg.Admin.Listen != "" {
		t.Errorf("limits or admin listener set: %+v %+v", cfg.Proxy, cfg.Admin)
	}
	creds, err := push.LoadCredentials(cfg.APNS, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if creds.Topic != apnsTopic {
		t.Errorf("APNs topic %q, want %q", creds.Topic, apnsTopic)
	}
	if m := listeningRE().FindStringSubmatch(`time=x level=INFO msg=listening tls=127.0.0.1:4321`); m == nil || m[1] != "127.0.0.1:4321" {
		t.Errorf("listening line not recognised: %q", m)
	}
	doc = xapsproxyConfig(p, "/tmp/x.db", instance{backend: "127.0.0.1:143", admin: true, events: "127.0.0.1:9144",
		watch: []string{"max_concurrent_logins = 3", `source = "dovecot"`}})
	if cfg, err = config.Parse(doc, t.TempDir()); err != nil {
		t.Fatal(err)
	}
	if cfg.Admin.Listen != "127.0.0.1:0" || cfg.Watch.MaxConcurrentLogins != 3 {
		t.Errorf("admin listener %q, max_concurrent_logins %d; want 127.0.0.1:0 and 3", cfg.Admin.Listen, cfg.Watch.MaxConcurrentLogins)
	}
	if cfg.Events.Listen != "127.0.0.1:9144" || cfg.Events.Secret != eventsSecret || cfg.Watch.Source != config.SourceDovecot {
		t.Errorf("events %+v, source %q; want the listener with the bench's secret, source dovecot", cfg.Events, cfg.Watch.Source)
	}
	if m := adminRE().FindStringSubmatch(`time=x level=INFO msg="admin listening" addr=127.0.0.1:4322`); m == nil || m[1] != "127.0.0.1:4322" {
		t.Errorf("admin listening line not recognised: %q", m)
	}
}
