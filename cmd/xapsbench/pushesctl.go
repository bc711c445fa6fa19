package main

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"
)

// fakeAPNsProc is the bench's handle on the fake APNs child process
// (fakeAPNsCmd), spoken to over its stdin and stdout.
type fakeAPNsProc struct {
	c   *child
	url string

	mu  sync.Mutex // one command at a time
	in  io.WriteCloser
	out *bufio.Reader
}

// startFakeAPNsProc re-executes this binary as the fake APNs, with the
// bench's server certificate and CA, and waits for its URL.
func startFakeAPNsProc(p *pki, streams int, cpuProfile string) (*fakeAPNsProc, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("fake APNs: %w", err)
	}
	args := []string{fakeAPNsCommand, "-cert", p.serverCert, "-key", p.serverKey, "-ca", p.caFile, "-streams", strconv.Itoa(streams)}
	if cpuProfile != "" {
		args = append(args, "-cpuprofile", cpuProfile)
	}
	cmd := exec.Command(self, args...)
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("fake APNs: %w", err)
	}
	outPipe, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("fake APNs: %w", err)
	}
	c, err := startChild("fake APNs", cmd)
	if err != nil {
		return nil, err
	}
	f := &fakeAPNsProc{c: c, in: in, out: bufio.NewReaderSize(outPipe, 64<<10)}
	line, err := f.out.ReadString('\n')
	url, ok := strings.CutPrefix(strings.TrimSpace(line), "url ")
	if err != nil || !ok {
		c.stop()
		return nil, fmt.Errorf("fake APNs did not start (%v): %q %s", err, line, c.out.String())
	}
	f.url = url
	return f, nil
}

func (f *fakeAPNsProc) pid() int { return f.c.pid() }

// send writes one command line; the caller holds mu and reads the answer.
func (f *fakeAPNsProc) send(command string) error {
	if _, err := io.WriteString(f.in, command+"\n"); err != nil {
		return fmt.Errorf("fake APNs %s: %w (%s)", command, err, f.c.out.String())
	}
	return nil
}

// do sends a command answered by "ok".
func (f *fakeAPNsProc) do(command string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.send(command); err != nil {
		return err
	}
	line, err := f.out.ReadString('\n')
	if err != nil || line != "ok\n" {
		return fmt.Errorf("fake APNs %s: %q, %v (%s)", command, line, err, f.c.out.String())
	}
	return nil
}

// ask sends a command answered by a summary.
func (f *fakeAPNsProc) ask(command string) (fakeSummary, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var s fakeSummary
	if err := f.send(command); err != nil {
		return s, err
	}
	line, err := f.out.ReadBytes('\n')
	if err != nil {
		return s, fmt.Errorf("fake APNs %s: %w (%s)", command, err, f.c.out.String())
	}
	if err := json.Unmarshal(line, &s); err != nil {
		return s, fmt.Errorf("fake APNs %s: %w: %q", command, err, line)
	}
	return s, nil
}

func (f *fakeAPNsProc) summary() (fakeSummary, error) { return f.ask("summary") }

// setMode makes the fake answer 200 or 500 and returns its totals at the
// switch (At: when it happened).
func (f *fakeAPNsProc) setMode(status int) (fakeSummary, error) {
	return f.ask("mode " + strconv.Itoa(status))
}

func (f *fakeAPNsProc) setDelay(d time.Duration) error { return f.do("delay " + d.String()) }

// records fetches what the fake saw of every device.
func (f *fakeAPNsProc) records() ([]fakeRecord, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.send("records"); err != nil {
		return nil, err
	}
	line, err := f.out.ReadString('\n')
	n, convErr := strconv.Atoi(strings.TrimPrefix(strings.TrimSpace(line), "records "))
	if err != nil || convErr != nil || n < 0 {
		return nil, fmt.Errorf("fake APNs records: %q, %v (%s)", line, err, f.c.out.String())
	}
	buf := make([]byte, n*fakeRecordSize)
	if _, err := io.ReadFull(f.out, buf); err != nil {
		return nil, fmt.Errorf("fake APNs records: %w", err)
	}
	recs := make([]fakeRecord, n)
	for i := range recs {
		b := buf[i*fakeRecordSize:]
		recs[i] = fakeRecord{first: int64(binary.LittleEndian.Uint64(b)), lastOK: int64(binary.LittleEndian.Uint64(b[8:])),
			ok: int32(binary.LittleEndian.Uint32(b[16:]))}
	}
	return recs, nil
}

// close asks the child to quit (so that it writes its CPU profile), waits
// up to 5 s, then stops it.
func (f *fakeAPNsProc) close() {
	f.mu.Lock()
	f.send("quit")
	f.in.Close()
	f.mu.Unlock()
	select {
	case <-f.c.done:
	case <-time.After(5 * time.Second):
	}
	f.c.stop()
}
