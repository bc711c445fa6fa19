package main

import (
	"bufio"
	"bytes"
	"cmp"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// groupSample is what the processes of one process group (a Dovecot
// instance: its master and everything it started) hold at one moment.
type groupSample struct {
	procs   int
	rss     int64            // KiB, summed VmRSS (shared pages counted in every process)
	pss     int64            // KiB, summed Pss (shared pages divided among their users)
	byName  map[string]int   // processes by command name, e.g. imap, imap-hibernate
	pssOf   map[string]int64 // their summed Pss, KiB
	inotify int              // inotify instances open
}

// sessionPss is the Pss of the processes that hold IMAP sessions (imap,
// and imap-hibernate for hibernated ones), KiB.
func (s groupSample) sessionPss() int64 { return s.pssOf["imap"] + s.pssOf["imap-hibernate"] }

// groupPids lists the processes whose process group is pgid.
func groupPids(pgid int) []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if _, pg, ok := procStat(pid); ok && pg == pgid {
			pids = append(pids, pid)
		}
	}
	return pids
}

// procStat returns the command name and process group of pid.
func procStat(pid int) (comm string, pgrp int, ok bool) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", 0, false
	}
	// pid (comm) state ppid pgrp ...; comm may hold spaces and parentheses.
	i, j := bytes.IndexByte(stat, '('), bytes.LastIndexByte(stat, ')')
	if i < 0 || j < i {
		return "", 0, false
	}
	f := strings.Fields(string(stat[j+1:]))
	if len(f) < 3 {
		return "", 0, false
	}
	pgrp, err = strconv.Atoi(f[2])
	return string(stat[i+1 : j]), pgrp, err == nil
}

// sampleGroup sums the memory of the processes of group pgid and counts
// them by name. Processes that exit meanwhile are skipped.
func sampleGroup(pgid int) groupSample {
	s := groupSample{byName: make(map[string]int), pssOf: make(map[string]int64)}
	for _, pid := range groupPids(pgid) {
		comm, _, ok := procStat(pid)
		rss, err := rssKiB(pid)
		if !ok || err != nil {
			continue
		}
		s.procs++
		s.byName[comm]++
		pss := pssKiB(pid)
		s.rss += rss
		s.pss += pss
		s.pssOf[comm] += pss
		s.inotify += inotifyInstances(pid)
	}
	return s
}

// groupRSS sums VmRSS of the processes of group pgid, in KiB, skipping
// those that exit meanwhile.
func groupRSS(pgid int) int64 {
	var sum int64
	for _, pid := range groupPids(pgid) {
		if kib, err := rssKiB(pid); err == nil {
			sum += kib
		}
	}
	return sum
}

// pssKiB returns the Pss line of /proc/PID/smaps_rollup, 0 if unreadable.
func pssKiB(pid int) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "Pss:"); ok {
			if fs := strings.Fields(rest); len(fs) == 2 {
				n, _ := strconv.ParseInt(fs[0], 10, 64)
				return n
			}
		}
	}
	return 0
}

// inotifyInstances counts the inotify file descriptors pid holds.
func inotifyInstances(pid int) int {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	entries, _ := os.ReadDir(dir)
	n := 0
	for _, e := range entries {
		if l, err := os.Readlink(filepath.Join(dir, e.Name())); err == nil && l == "anon_inode:inotify" {
			n++
		}
	}
	return n
}

// names lists the process counts by name, most first, e.g.
// "1003 imap, 1 imap-hibernate, ...".
func (s groupSample) names() string {
	type kv struct {
		name string
		n    int
	}
	var all []kv
	for k, v := range s.byName {
		all = append(all, kv{k, v})
	}
	slices.SortFunc(all, func(a, b kv) int { // most first, then by name
		return cmp.Or(cmp.Compare(b.n, a.n), cmp.Compare(a.name, b.name))
	})
	parts := make([]string, len(all))
	for i, e := range all {
		parts[i] = fmt.Sprintf("%d %s", e.n, e.name)
	}
	return strings.Join(parts, ", ")
}

const inotifySysctl = "/proc/sys/fs/inotify/max_user_instances"

// inotifyLimit reads fs.inotify.max_user_instances.
func inotifyLimit() (int, error) {
	b, err := os.ReadFile(inotifySysctl)
	if err != nil {
		return 0, fmt.Errorf("fs.inotify.max_user_instances: %w", err)
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// setInotifyLimit writes fs.inotify.max_user_instances.
func setInotifyLimit(n int) error {
	if err := os.WriteFile(inotifySysctl, []byte(strconv.Itoa(n)+"\n"), 0o644); err != nil {
		return fmt.Errorf("setting fs.inotify.max_user_instances: %w", err)
	}
	return nil
}
