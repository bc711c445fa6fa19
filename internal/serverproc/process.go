package serverproc

import (
	"fmt"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// Process is a server's master process, started in a process group of its
// own so that Kill reaches every process it forks. Its methods are safe for
// concurrent use; the zero value is a stopped process.
type Process struct {
	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

// Start starts cmd as cred (nil: as ourselves) in its own process group.
// Pdeathsig kills the master if our process dies; its children then exit
// by themselves. A goroutine reaps the master and ends when it exits.
func (p *Process) Start(cmd *exec.Cmd, cred *syscall.Credential) error {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: cred, Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = time.Second // don't hang on output pipes held by stray children
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	p.mu.Lock()
	p.cmd, p.done = cmd, done
	p.mu.Unlock()
	return nil
}

// WaitReady polls until the IMAP address greets with "* OK" and the LMTP
// address with "220", the master exits, or timeout passes.
func (p *Process) WaitReady(name, imapAddr, lmtpAddr string, timeout, every time.Duration) error {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	deadline := time.Now().Add(timeout)
	for {
		err := Probe(imapAddr, "* OK")
		if err == nil {
			err = Probe(lmtpAddr, "220")
		}
		if err == nil {
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("%s exited during startup (%v)", name, cmd.ProcessState)
		case <-time.After(every):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %v: %w", name, timeout, err)
		}
	}
}

// Kill SIGKILLs the whole process group and waits for the master.
func (p *Process) Kill() {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.cmd = nil
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	<-done
}

// Stop sends SIGTERM and waits up to timeout for the master, then kills
// the group (which also ends any child still holding a listener). It
// reports whether the master ignored SIGTERM. Stopping a stopped process
// does nothing.
func (p *Process) Stop(timeout time.Duration) (ignored bool) {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return false
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(timeout):
		ignored = true
	}
	p.Kill()
	return ignored
}

// Pid is the master's process id, 0 when stopped.
func (p *Process) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return 0
	}
	return p.cmd.Process.Pid
}
