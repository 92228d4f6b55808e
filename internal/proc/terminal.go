package proc

import (
	"os"
	"os/signal"
	"syscall"
	"time"
	"unsafe"
)

// The terminal is stdin's. lockex hands its foreground to the workload
// when lockex has it, so that Ctrl-C, Ctrl-\ and Ctrl-Z reach the workload
// and the workload can read the terminal, as it could without lockex; and
// takes it back when the workload is done with it.

// ownsTerminal reports whether stdin is a terminal whose foreground is
// lockex's process group: not when lockex runs in the background, under
// cron, or in a container without a tty.
func ownsTerminal() bool {
	fg, err := foregroundGroup()
	return err == nil && fg == syscall.Getpgrp()
}

func foregroundGroup() (int, error) {
	var pgrp int32
	if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, 0, syscall.TIOCGPGRP, uintptr(unsafe.Pointer(&pgrp))); errno != 0 {
		return 0, errno
	}
	return int(pgrp), nil
}

func setForegroundGroup(pgrp int) error {
	p := int32(pgrp)
	if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, 0, syscall.TIOCSPGRP, uintptr(unsafe.Pointer(&p))); errno != 0 {
		return errno
	}
	return nil
}

// takeTerminalFrom gives the foreground back to lockex's process group if
// the group pgrp has it. If the user's shell has taken it meanwhile, it
// stays there. lockex ignores SIGTTOU by now, so the call cannot stop it.
func takeTerminalFrom(pgrp int) {
	if fg, err := foregroundGroup(); err == nil && fg == pgrp {
		_ = setForegroundGroup(syscall.Getpgrp())
	}
}

// ResumeOnlyIf makes lockex, continued after a job-control stop of the
// workload and itself, continue the workload only once may reports true:
// the lock may still be held. Without it, the workload is continued at
// once.
func (p *Process) ResumeOnlyIf(may func() bool) { p.resumeIf.Store(&may) }

func (p *Process) mayResume() bool {
	may := p.resumeIf.Load()
	return may == nil || (*may)()
}

// suspend passes a job-control stop of the workload (Ctrl-Z, or reading
// the terminal from the background) on to lockex's own process group, so
// the user's shell sees its job stop. When the shell continues it with fg
// or bg, the workload is continued too, and gets the foreground back if
// lockex was given it.
func (p *Process) suspend() {
	cont := make(chan os.Signal, 1)
	signal.Notify(cont, syscall.SIGCONT)
	defer signal.Stop(cont)

	takeTerminalFrom(p.pid)
	if jobControlled() {
		p.reaper.log.Info("workload stopped by job control; stopping lockex too", "pid", p.pid)
		_ = syscall.Kill(0, syscall.SIGTSTP)
		<-cont
	}
	if !p.mayResume() {
		// Stopped for longer than the lock could be kept: the session may
		// have expired, and the next holder's workload be running. This
		// one stays stopped until lockex knows: then either the lock is
		// lost and lockex kills it, or it is still held.
		p.reaper.log.Warn("continued, but the lock may be lost by now; the workload stays stopped until that is known", "pid", p.pid)
		for !p.mayResume() {
			select {
			case <-p.done:
				return
			case <-time.After(stopPoll):
			}
		}
	}
	if ownsTerminal() {
		_ = setForegroundGroup(p.pid)
	}
	p.reaper.log.Info("continued; continuing the workload", "pid", p.pid)
	_ = syscall.Kill(-p.pid, syscall.SIGCONT)
}

// jobControlled reports whether a shell with job control can continue
// lockex once it stops: lockex's parent is in the same session but another
// process group. Otherwise the kernel discards SIGTSTP to lockex's group
// (an orphaned group), and the workload is simply continued.
func jobControlled() bool {
	parent := syscall.Getppid()
	ppgrp, err := syscall.Getpgid(parent)
	if err != nil || ppgrp == syscall.Getpgrp() {
		return false
	}
	psid, err1 := getsid(parent)
	sid, err2 := getsid(0)
	return err1 == nil && err2 == nil && psid == sid
}

func getsid(pid int) (int, error) {
	sid, _, errno := syscall.RawSyscall(syscall.SYS_GETSID, uintptr(pid), 0, 0)
	if errno != 0 {
		return 0, errno
	}
	return int(sid), nil
}
