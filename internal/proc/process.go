package proc

import (
	"sync/atomic"
	"syscall"

	"github.com/lockex/lockex/internal/exitcode"
)

// Process is a started workload, the leader of its own process group.
type Process struct {
	pid    int
	reaper *Reaper
	// tty is set when the workload was given the terminal's foreground.
	tty bool
	// cgroup is the cgroup made for the workload, "" if none or removed.
	cgroup string
	// groupForgotten is set once the guardian was told to forget the
	// workload's process group.
	groupForgotten bool
	// resumeIf, if set, says whether the workload may be continued after
	// a job-control stop (ResumeOnlyIf).
	resumeIf atomic.Pointer[func() bool]

	done chan struct{}
	code int
}

// Pid is the workload's process id, and its process group's.
func (p *Process) Pid() int { return p.pid }

// Done closes when the workload's main process has exited and been reaped.
func (p *Process) Done() <-chan struct{} { return p.done }

// ExitCode is the workload's exit code, 128+N if signal N ended it. It is
// valid once Done is closed.
func (p *Process) ExitCode() int { return p.code }

// Signal sends sig to the workload's whole process group.
func (p *Process) Signal(sig syscall.Signal) error {
	return syscall.Kill(-p.pid, sig)
}

// exited records the main process's end; the reaper calls it with its
// lock held, once.
func (p *Process) exited(ws syscall.WaitStatus) {
	if ws.Signaled() {
		p.code = exitcode.Signal(ws.Signal())
	} else {
		p.code = ws.ExitStatus()
	}
	if p.tty {
		// Whatever the workload left behind must not keep the terminal.
		takeTerminalFrom(p.pid)
	}
	close(p.done)
}
