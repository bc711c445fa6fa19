package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"github.com/xapsproxy/xapsproxy/config"
	"github.com/xapsproxy/xapsproxy/proxy"
	"github.com/xapsproxy/xapsproxy/store"
)

// connmemServerCmd is the child process of `xapsbench connmem`: xapsproxy's
// proxy.Server (the code every `xapsproxy serve` session runs) alone in a
// process that records every allocation, so that its heap can be broken
// down by allocation site. It prints "addr HOST:PORT", then answers
// commands on stdin, one JSON line each:
//
//	snap        MemStats and RSS as they are (no GC)
//	gc          the same after runtime.GC and debug.FreeOSMemory
//	sites N     the N allocation sites holding the most live heap
func connmemServerCmd(args []string, stdin io.Reader, stdout io.Writer) error {
	runtime.MemProfileRate = 1 // every allocation, so site totals are exact
	fs := flag.NewFlagSet("connmem-server", flag.ContinueOnError)
	backend := fs.String("backend", "", "backend address")
	certFile := fs.String("cert", "", "certificate")
	keyFile := fs.String("key", "", "key")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cert, err := proxy.LoadCertificate(*certFile, *keyFile)
	if err != nil {
		return err
	}
	srv := proxy.New(proxy.Options{
		Backend:      config.Backend{Address: *backend, TLS: config.BackendTLSNone},
		TLS:          cert.TLSConfig(),
		Register:     func(context.Context, store.Registration) error { return nil },
		LoginTimeout: 10 * time.Minute,
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	go srv.ServeTLS(ln)
	defer srv.Shutdown(context.Background())
	if _, err := fmt.Fprintf(stdout, "addr %s\n", ln.Addr()); err != nil {
		return err
	}
	enc := json.NewEncoder(stdout)
	sc := bufio.NewScanner(stdin)
	for sc.Scan() {
		cmd, arg, _ := strings.Cut(sc.Text(), " ")
		var v any
		switch cmd {
		case "snap":
			v = takeSnapshot()
		case "gc":
			runtime.GC()
			debug.FreeOSMemory()
			v = takeSnapshot()
		case "sites":
			var n int
			fmt.Sscan(arg, &n)
			v = liveSites(n)
		default:
			return fmt.Errorf("connmem-server: unknown command %q", cmd)
		}
		if err := enc.Encode(v); err != nil {
			return err
		}
	}
	return sc.Err()
}

// snapshot is the child's memory at one moment.
type snapshot struct {
	RSS        int64  // KiB
	HeapAlloc  uint64 // bytes of live (and not yet collected) heap objects
	HeapInuse  uint64 // bytes in in-use heap spans
	HeapIdle   uint64 // heap spans without objects (returned or not)
	HeapRel    uint64 // of those, returned to the OS
	StackInuse uint64
	Sys        uint64
	Goroutines int
}

func takeSnapshot() snapshot {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	rss, _ := rssKiB(os.Getpid())
	return snapshot{RSS: rss, HeapAlloc: ms.HeapAlloc, HeapInuse: ms.HeapInuse, HeapIdle: ms.HeapIdle,
		HeapRel: ms.HeapReleased, StackInuse: ms.StackInuse, Sys: ms.Sys, Goroutines: runtime.NumGoroutine()}
}

// site is live heap allocated at one place: the innermost frames outside
// the runtime.
type site struct {
	Where   string
	Bytes   int64
	Objects int64
}

// liveSites returns the n sites with the most live bytes as of the last GC.
func liveSites(n int) []site {
	runtime.GC()
	runtime.GC() // the profile describes the heap as of the last completed cycle
	var recs []runtime.MemProfileRecord
	for {
		k, ok := runtime.MemProfile(make([]runtime.MemProfileRecord, 0), false)
		recs = make([]runtime.MemProfileRecord, k+100)
		if k, ok = runtime.MemProfile(recs, false); ok {
			recs = recs[:k]
			break
		}
	}
	bySite := map[string]*site{}
	for _, r := range recs {
		key := siteName(r.Stack())
		s := bySite[key]
		if s == nil {
			s = &site{Where: key}
			bySite[key] = s
		}
		s.Bytes += r.InUseBytes()
		s.Objects += r.InUseObjects()
	}
	var all []site
	for _, s := range bySite {
		all = append(all, *s)
	}
	slices.SortFunc(all, func(a, b site) int { return int(b.Bytes - a.Bytes) })
	return all[:min(n, len(all))]
}

// siteName names a stack by its three innermost frames outside packages
// runtime and bytes (whose buffers are only the means), innermost first.
func siteName(stack []uintptr) string {
	frames := runtime.CallersFrames(stack)
	var names []string
	for len(names) < 3 {
		f, more := frames.Next()
		fn := f.Function
		if fn != "" && !strings.HasPrefix(fn, "runtime.") && !strings.HasPrefix(fn, "bytes.") {
			fn = strings.TrimPrefix(fn, "github.com/xapsproxy/xapsproxy/")
			fn = strings.TrimPrefix(fn, "github.com/emersion/")
			names = append(names, fn)
		}
		if !more {
			break
		}
	}
	if len(names) == 0 {
		return "(runtime only: goroutine descriptors and the like)"
	}
	return strings.Join(names, " < ")
}
