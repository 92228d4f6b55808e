package proc

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"syscall"
)

// guard is lockex's end of the guardian (guardian.go): the write end of
// the pipe that is the guardian's stdin. It is close-on-exec, so no
// workload holds it: when lockex dies, the guardian reads end of file.
type guard struct {
	pid int
	w   *os.File
	log *slog.Logger
	// broken is set once a message could not be sent: the guardian is gone.
	broken bool
}

var errCannotGuard = errors.New("this binary does not start as a guardian when re-executed")

// startGuardLocked starts the guardian, in a process group of its own so
// that the terminal's and the shell's signals to lockex's group and to the
// workload's miss it, and registers it with r, so that the orphan sweep
// of Stop leaves it alone. r.mu is held: its status cannot be reaped
// before it is registered.
func (r *Reaper) startGuardLocked() (*guard, error) {
	if !canGuard.Load() {
		return nil, errCannotGuard
	}
	var fds [2]int
	if err := syscall.Pipe2(fds[:], syscall.O_CLOEXEC); err != nil {
		return nil, fmt.Errorf("pipe: %w", err)
	}
	defer syscall.Close(fds[0])
	w := os.NewFile(uintptr(fds[1]), "guardian")
	null, err := syscall.Open(os.DevNull, syscall.O_RDWR|syscall.O_CLOEXEC, 0)
	if err != nil {
		w.Close()
		return nil, err
	}
	defer syscall.Close(null)
	format := "text"
	if _, ok := r.log.Handler().(*slog.JSONHandler); ok {
		format = "json"
	}
	// /proc/self/exe, not a path: it still names lockex's binary after
	// an upgrade replaced or deleted the file. No environment: lockex's
	// may hold secrets, and the guardian needs none of it.
	// Its descriptor 2, where the runtime writes should it crash, never
	// blocks, from its first instruction on (SplitStderr); its log lines
	// go to descriptor 3, lockex's stderr as the workload has it.
	crash := stderrFd
	if nb, err := nonBlocking(stderrFd); err == nil {
		defer syscall.Close(nb)
		crash = nb
	}
	pid, err := syscall.ForkExec("/proc/self/exe", []string{GuardName, format, guardLogFd}, &syscall.ProcAttr{
		Dir:   "/",
		Env:   []string{"GOMAXPROCS=1"},
		Files: []uintptr{uintptr(fds[0]), uintptr(null), uintptr(crash), uintptr(stderrFd)},
		Sys:   &syscall.SysProcAttr{Setpgid: true},
	})
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("start %s: %w", GuardName, err)
	}
	p := &Process{pid: pid, reaper: r, done: make(chan struct{}), gone: make(chan struct{})}
	r.procs[pid] = p
	g := &guard{pid: pid, w: w, log: r.log}
	go r.watchGuard(p)
	return g, nil
}

// guardRestartMax bounds how many times lockex starts another guardian
// after one ended while lockex still needed it.
const guardRestartMax = 10

// watchGuard starts another guardian if this one ends while lockex still
// needs it (it was killed: by hand, by the OOM killer), and hands it what
// the last one guarded. Until then, and if it cannot, a SIGKILL of lockex
// leaves the workload's background to run on beside the next holder.
func (r *Reaper) watchGuard(p *Process) {
	<-p.done
	r.mu.Lock()
	c := &r.confine
	if c.closing.Load() || c.guard == nil || c.guard.pid != p.pid {
		r.mu.Unlock()
		return
	}
	old := c.guard
	var g *guard
	err := errors.New("restarted too often")
	if c.restarts < guardRestartMax {
		c.restarts++
		g, err = r.startGuardLocked()
	}
	if g != nil {
		_ = old.w.Close()
		c.guard = g
		for _, w := range r.started {
			if w.cgroup != "" {
				g.send("guard cgroup %s", w.cgroup)
			}
			// A group with a member left, zombies included, keeps its id.
			if !w.groupForgotten && syscall.Kill(-w.pid, 0) != syscall.ESRCH {
				g.send("guard group %d", w.pid)
			}
		}
		// Ended, empty, and not yet removed (retireLocked): should
		// lockex die first, the guardian removes them.
		for _, cg := range r.emptied {
			g.send("guard cgroup %s", cg)
		}
	}
	r.mu.Unlock()
	if g != nil {
		r.log.Warn("the guardian exited; started another", "pid", p.pid, "status", p.code, "guardian", g.pid)
		return
	}
	r.log.Warn("the guardian exited; if lockex is killed now, what the workload runs in the background may outlive the lock",
		"pid", p.pid, "status", p.code, "err", err)
}

// send writes one message to the guardian: one short line, one write, so
// it cannot be interleaved, and it does not block (a pipe holds 64 KiB and
// lockex sends a handful of lines).
func (g *guard) send(format string, args ...any) {
	if g.broken {
		return
	}
	if _, err := fmt.Fprintf(g.w, format+"\n", args...); err != nil {
		g.broken = true
		g.log.Warn("cannot reach the guardian", "pid", g.pid, "err", err)
	}
}

// close tells the guardian that lockex is leaving: done if nothing it
// started still runs, else end of file, on which the guardian kills it.
func (g *guard) close(done bool) {
	if done {
		g.send("done")
	}
	_ = g.w.Close()
}
