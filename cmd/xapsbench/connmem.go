package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"time"
)

// connmemCmd explains the per-connection memory of xapsproxy: it runs
// xapsproxy's session code (proxy.Server) in a child process that records
// every allocation, opens idle logged-in TLS connections to it, and
// reports the growth per connection of RSS, live heap and goroutine stacks,
// and the allocation sites holding the live heap.
func connmemCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("xapsbench connmem", flag.ContinueOnError)
	fs.SetOutput(stderr)
	conns := fs.Int("conns", 2000, "idle connections")
	warmup := fs.Int("warmup", 100, "connections opened before the first sample")
	sites := fs.Int("sites", 15, "allocation sites to list")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if _, err := raiseFileLimit(uint64(2*(*conns+*warmup) + 4096)); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "xapsbench")
	if err != nil {
		return fmt.Errorf("temporary directory: %w", err)
	}
	defer os.RemoveAll(dir)
	p, err := newPKI(dir)
	if err != nil {
		return err
	}
	pool, err := p.pool()
	if err != nil {
		return err
	}
	mem, err := startMemBackend()
	if err != nil {
		return err
	}
	defer mem.Close()
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("connmem: %w", err)
	}
	cmd := exec.Command(self, "connmem-server", "-backend", mem.addr(), "-cert", p.serverCert, "-key", p.serverKey)
	in, err := cmd.StdinPipe()
	if err != nil {
		return fmt.Errorf("connmem: %w", err)
	}
	outPipe, err := cmd.StdoutPipe()
	if err != nil {
		return fmt.Errorf("connmem: %w", err)
	}
	c, err := startChild("connmem-server", cmd)
	if err != nil {
		return err
	}
	defer c.stop()
	out := bufio.NewReader(outPipe)
	line, err := out.ReadString('\n')
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "addr ")
	if err != nil || !ok {
		return fmt.Errorf("connmem-server did not start (%v): %q %s", err, line, c.out.String())
	}
	ask := func(command string, v any) error {
		if _, err := io.WriteString(in, command+"\n"); err != nil {
			return fmt.Errorf("connmem-server %s: %w", command, err)
		}
		line, err := out.ReadBytes('\n')
		if err != nil {
			return fmt.Errorf("connmem-server %s: %w (%s)", command, err, c.out.String())
		}
		return json.Unmarshal(line, v)
	}

	t := target{name: "proxy.Server", addr: addr, tls: &tls.Config{MinVersion: tls.VersionTLS13, MaxVersion: tls.VersionTLS13, RootCAs: pool, ServerName: "localhost"}}
	fmt.Fprintf(stderr, "xapsbench connmem: %d warm-up connections\n", *warmup)
	warm, _, err := openIdle(ctx, t, *warmup, 50)
	defer closeAll(warm)
	if err != nil {
		return err
	}
	var before, afterRaw, after snapshot
	if err := ask("gc", &before); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "xapsbench connmem: %d idle connections (every allocation is recorded: slower than xapsproxy)\n", *conns)
	held, _, err := openIdle(ctx, t, *conns, 50)
	defer closeAll(held)
	if err != nil {
		return err
	}
	time.Sleep(2 * time.Second)
	if err := ask("snap", &afterRaw); err != nil {
		return err
	}
	if err := ask("gc", &after); err != nil {
		return err
	}
	var top []site
	if err := ask(fmt.Sprintf("sites %d", *sites), &top); err != nil {
		return err
	}
	return printConnmem(stdout, *conns, *warmup, before, afterRaw, after, top)
}

func closeAll(conns []*imapConn) {
	for _, c := range conns {
		c.Close()
	}
}

func printConnmem(w io.Writer, n, warmup int, before, afterRaw, after snapshot, top []site) error {
	r := &report{w: w}
	per := func(a, b uint64) float64 { return (float64(a) - float64(b)) / float64(n) / 1024 }
	r.f("Memory per idle logged-in TLS connection of xapsproxy's proxy.Server, %d connections (KiB)", n)
	r.f("  RSS, no forced GC (as the benchmark measures)   %6.1f", float64(afterRaw.RSS-before.RSS)/float64(n))
	r.f("  RSS, after GC and FreeOSMemory                  %6.1f", float64(after.RSS-before.RSS)/float64(n))
	r.f("  live heap (HeapAlloc after GC)                  %6.1f", per(after.HeapAlloc, before.HeapAlloc))
	r.f("  heap spans in use (HeapInuse after GC)          %6.1f", per(after.HeapInuse, before.HeapInuse))
	r.f("  goroutine stacks (StackInuse)                   %6.1f   (%.1f goroutines per connection, %.1f KiB each)",
		per(after.StackInuse, before.StackInuse), float64(after.Goroutines-before.Goroutines)/float64(n),
		float64(after.StackInuse-before.StackInuse)/float64(max(after.Goroutines-before.Goroutines, 1))/1024)
	r.f("  heap before GC (HeapAlloc, live + garbage)      %6.1f", per(afterRaw.HeapAlloc, before.HeapAlloc))
	r.f("")
	r.f("Live heap by allocation site after GC, divided by all %d connections (warm-up included; the whole process is counted)", n+warmup)
	r.f("  %8s %8s  %s", "KiB", "objects", "site (innermost first)")
	for _, s := range top {
		r.f("  %8.2f %8.2f  %s", float64(s.Bytes)/float64(n+warmup)/1024, float64(s.Objects)/float64(n+warmup), s.Where)
	}
	return r.err
}
