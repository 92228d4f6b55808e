package proc

import (
	"os"
	"os/signal"
	"syscall"
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

// suspend passes a job-control stop of the workload (Ctrl-Z, or reading
// the terminal from the background) on to lockex's own process group, so
// the user's shell sees its job stop. When the shell continues it with fg
// or bg, the workload gets the foreground back if lockex was given it,
// and Continued says so: whether the workload goes on is the
// supervisor's to decide, as lockex may have been stopped for longer than
// its lock could be vouched for (another holder may run now).
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
	if ownsTerminal() {
		_ = setForegroundGroup(p.pid)
	}
	select {
	case p.cont <- struct{}{}:
	default: // one is pending already
	}
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
