package proc

import (
	"os"
	"sync"
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
	// pidfd is the workload's pidfd, nil if the kernel gave none; its
	// watcher closes it (reaper.go, watchExit).
	pidfd *os.File

	done chan struct{}
	code int
	// cont receives when lockex, stopped with the workload by job
	// control, was continued (see Continued).
	cont chan struct{}
	// interrupted is the signal of a terminal's key (SIGINT, SIGQUIT)
	// that ended the workload in the foreground; 0 if none did.
	interrupted syscall.Signal

	// groupGone is set once the workload's group was seen empty; gone
	// closes once everything under the lock is (see Gone).
	groupGone bool
	// groupKilled is set once the group, seen with members but none
	// alive, was sent SIGKILL in case the look missed one.
	groupKilled bool
	// refused lists what lockex may not signal, said once each.
	refused map[int]bool
	// killing is set by KillAll: what Gone finds from then on is sent
	// SIGKILL.
	killing  bool
	goneOnce sync.Once
	gone     chan struct{}
}

// Pid is the workload's process id, and its process group's.
func (p *Process) Pid() int { return p.pid }

// Done closes when the workload's main process has exited and been reaped.
func (p *Process) Done() <-chan struct{} { return p.done }

// Continued receives when lockex, stopped by job control together with the
// workload (Ctrl-Z), has been continued. The workload stays stopped: it is
// for the caller to continue it (SIGCONT), if the lock still holds.
func (p *Process) Continued() <-chan struct{} { return p.cont }

// ExitCode is the workload's exit code, 128+N if signal N ended it. It is
// valid once Done is closed.
func (p *Process) ExitCode() int { return p.code }

// Interrupted reports the signal, SIGINT or SIGQUIT, that ended the
// workload while it had the terminal's foreground: the key a user typed
// (Ctrl-C, Ctrl-\) went to the workload's group alone. Valid once Done
// is closed.
func (p *Process) Interrupted() (syscall.Signal, bool) { return p.interrupted, p.interrupted != 0 }

// Signal sends sig to the workload's whole process group, and to its main
// process if that left the group.
func (p *Process) Signal(sig syscall.Signal) error {
	err := syscall.Kill(-p.pid, sig)
	r := p.reaper
	r.mu.Lock()
	defer r.mu.Unlock()
	// Not reaped (r.mu held): its pid is still its own.
	if p.strayedMainLocked() {
		return syscall.Kill(p.pid, sig)
	}
	return err
}

// exited records the main process's end; the reaper calls it with its
// lock held, once.
func (p *Process) exited(ws syscall.WaitStatus) {
	if ws.Signaled() {
		p.code = exitcode.Signal(ws.Signal())
		if sig := ws.Signal(); p.tty && (sig == syscall.SIGINT || sig == syscall.SIGQUIT) {
			p.interrupted = sig
		}
	} else {
		p.code = ws.ExitStatus()
	}
	if p.tty {
		// Whatever the workload left behind must not keep the terminal.
		takeTerminalFrom(p.pid)
	}
	close(p.done)
}
