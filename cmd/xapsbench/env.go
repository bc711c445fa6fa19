package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
)

// environment is what the report says about the machine and the software.
type environment struct {
	command   string
	dir       string
	cpus      int
	cpuModel  string
	kernel    string
	goVersion string // the toolchain that built xapsproxy
	dovecot   string
	nginx     string // version, or why it is not measured
	goEnv     string // GOGC, GOMEMLIMIT, GOMAXPROCS, GODEBUG if set
	proxyEnv  string // -xapsproxy-env
	fileLimit uint64
}

// commandLine is how this run was started: `go run ./cmd/xapsbench ...`
// when run through go run (the binary then lives in a go-build directory),
// else the binary and its arguments.
func commandLine(args []string) string {
	exe, _ := os.Executable()
	cmd := os.Args[0]
	if strings.Contains(exe, string(filepath.Separator)+"go-build") {
		cmd = "go run ./cmd/xapsbench"
	}
	return strings.TrimSpace(cmd + " " + strings.Join(args, " "))
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if name, val, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(name) == "model name" {
			return strings.TrimSpace(val)
		}
	}
	return "unknown CPU"
}

func kernel() string {
	b, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return runtime.GOOS
	}
	return runtime.GOOS + " " + strings.TrimSpace(string(b))
}

func goEnv() string {
	var set []string
	for _, k := range []string{"GOGC", "GOMEMLIMIT", "GOMAXPROCS", "GODEBUG"} {
		if v, ok := os.LookupEnv(k); ok {
			set = append(set, k+"="+v)
		}
	}
	if len(set) == 0 {
		return "none set (runtime defaults)"
	}
	return strings.Join(set, " ")
}

func (e *environment) print(w *report) {
	w.f("command:      %s", e.command)
	w.f("directory:    %s", e.dir)
	w.f("machine:      %d CPUs (%s), %s, GOMAXPROCS %d, RLIMIT_NOFILE %d", e.cpus, e.cpuModel, e.kernel, runtime.GOMAXPROCS(0), e.fileLimit)
	w.f("go:           %s (bench built with %s); GO env: %s", e.goVersion, runtime.Version(), e.goEnv)
	if e.proxyEnv != "" {
		w.f("xapsproxy:    extra environment %s", e.proxyEnv)
	}
	w.f("dovecot:      %s", e.dovecot)
	w.f("nginx:        %s", e.nginx)
}

// report writes lines to the output, remembering the first write error.
type report struct {
	w   io.Writer
	err error
}

func (r *report) f(format string, args ...any) {
	if r.err == nil {
		_, r.err = fmt.Fprintf(r.w, format+"\n", args...)
	}
}
