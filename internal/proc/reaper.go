package proc

import (
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// Reaper is the only code in lockex that waits for child processes. A
// second waiter would race it: wait4(-1) in one goroutine can take the
// status that exec.Cmd.Wait in another is waiting for (go-reap's warning).
// So the workload is started here, not with os/exec, and its status is
// matched by pid from the same wait4(-1) loop that reaps the orphans handed
// to lockex when it is PID 1 or a subreaper.
type Reaper struct {
	log *slog.Logger
	// orphans is set when orphaned descendants are handed to lockex.
	orphans bool

	// mu is held across a fork and the registration of its pid, and
	// across every wait4, so no status is collected before the Process it
	// belongs to is known.
	mu    sync.Mutex
	procs map[int]*Process
	// started lists the workloads not all gone yet, for Close to account
	// for; one that is all gone leaves it (allGone), or a lockex that
	// runs round after round would keep every one of them.
	started []*Process
	// emptied lists the cgroups of workloads that ended, empty, that are
	// yet to be removed (retireLocked).
	emptied []string
	// said is set once the first workload's confinement was logged.
	said    bool
	confine confinement
	// closed is set by Close: from then on nothing of r's calls wait4,
	// the pidfd watchers included.
	closed bool

	sigchld chan os.Signal
	stop    chan struct{}
	stopped chan struct{}
}

// NewReaper starts reaping. With subreaper, lockex asks the kernel to hand
// it the orphans among its descendants (PR_SET_CHILD_SUBREAPER), as PID 1
// gets them anyway.
func NewReaper(log *slog.Logger, subreaper bool) (*Reaper, error) {
	if subreaper {
		if err := setChildSubreaper(); err != nil {
			return nil, fmt.Errorf("--subreaper: %w", err)
		}
	}
	r := &Reaper{
		log:     log,
		orphans: subreaper || os.Getpid() == 1,
		procs:   map[int]*Process{},
		sigchld: make(chan os.Signal, 1),
		stop:    make(chan struct{}),
		stopped: make(chan struct{}),
	}
	// One buffered slot is enough: reap collects every exited child, so a
	// SIGCHLD dropped while one is pending is covered by the pending one.
	signal.Notify(r.sigchld, syscall.SIGCHLD)
	go r.loop()
	return r, nil
}

// Close stops reaping, and returns once no wait4 of r's is in flight. It
// lets the guardian go: anything a workload started that still runs is
// the guardian's to kill.
func (r *Reaper) Close() {
	r.closeGuard()
	r.mu.Lock()
	r.closed = true
	for _, p := range r.started {
		if p.pidfd != nil {
			_ = p.pidfd.Close() // ends its watcher
		}
	}
	r.mu.Unlock()
	signal.Stop(r.sigchld)
	close(r.stop)
	<-r.stopped
}

func (r *Reaper) loop() {
	defer close(r.stopped)
	for {
		select {
		case <-r.sigchld:
			r.reap()
		case <-r.stop:
			return
		}
	}
}

// Start runs the file at path with argv and env as the workload: it shares
// lockex's stdin, stdout and stderr, leads its own process group (and gets
// the terminal's foreground if lockex has it), and gets SIGKILL if lockex
// dies. Unless lockex is PID 1, a guardian (started by Prepare, or else
// now) kills the workload's group, and its cgroup if it has one, should lockex
// die before it has stopped them (confine.go).
func (r *Reaper) Start(path string, argv, env []string) (*Process, error) {
	attr := &syscall.ProcAttr{
		Env:   env,
		Files: []uintptr{0, 1, uintptr(stderrFd)},
		Sys:   &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL},
	}
	tty := ownsTerminal()
	if tty {
		// Ctrl-C and Ctrl-Z must reach the workload, and it may read the
		// terminal; the child makes itself the foreground group before
		// exec, with its signals still blocked.
		attr.Sys.Foreground, attr.Sys.Ctty = true, 0
	}

	r.mu.Lock()
	r.retireLocked()
	guard, cg := r.confineLocked()
	if cg != nil {
		// Guarded before the workload exists: it cannot run outside the
		// cgroup, or inside it unguarded.
		guard.send("guard cgroup %s", cg.path)
		attr.Sys.UseCgroupFD, attr.Sys.CgroupFD = true, cg.fd
	}
	pid, err := forkExec(path, argv, attr)
	if err != nil && cg != nil {
		// clone3 may be what failed (a seccomp filter, Linux < 5.7), or
		// the move into the cgroup: once more without it.
		r.noCgroup(cg, err)
		cg, attr.Sys.UseCgroupFD = nil, false
		pid, err = forkExec(path, argv, attr)
	}
	if err != nil {
		r.mu.Unlock()
		return nil, startError(path, err)
	}
	if guard != nil {
		// At once: the workload may start background children any
		// moment now.
		guard.send("guard group %d", pid)
	}
	p := &Process{pid: pid, reaper: r, tty: tty, done: make(chan struct{}), gone: make(chan struct{}), cont: make(chan struct{}, 1)}
	if cg != nil {
		cg.forked()
		p.cgroup = cg.path
	}
	r.trackLocked(p)
	r.started = append(r.started, p)
	first := !r.said
	r.said = true
	r.mu.Unlock()
	if first {
		r.sayConfinement(p)
	}

	if tty {
		// From now on lockex may be a background process on its own
		// terminal: taking the foreground back, or logging with TOSTOP
		// set, must not stop it. Ignoring SIGTTOU only now keeps the
		// workload, already exec'd, at the default.
		signal.Ignore(syscall.SIGTTOU)
	}
	return p, nil
}

// forkExec forks the workload. Linux sends the parent-death signal when
// the thread that forked exits, not the process (golang/go#27505). A
// thread that was locked and is unlocked again lives as long as lockex;
// without the lock the fork could run on a thread the runtime is about to
// retire.
func forkExec(path string, argv []string, attr *syscall.ProcAttr) (int, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	return syscall.ForkExec(path, argv, attr)
}

// trackLocked registers p, just forked, for the wait4 loop to hand its
// status to, and reaps it the moment its pidfd says it exited. r.mu is
// held since the fork: p's pid cannot have been reaped, so the pidfd is
// p's, if only as a zombie.
func (r *Reaper) trackLocked(p *Process) {
	r.procs[p.pid] = p
	p.pidfd = openPidfd(p.pid)
	if p.pidfd != nil {
		go r.watchExit(p.pidfd)
	}
}

// openPidfd returns a pidfd for pid, registered with Go's netpoller (a
// pidfd turns readable when its process exits), or nil where the kernel
// has none (before Linux 5.3) or a seccomp filter refuses it: SIGCHLD
// then does alone what it always does.
func openPidfd(pid int) *os.File {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil
	}
	if err := syscall.SetNonblock(fd, true); err != nil {
		_ = syscall.Close(fd)
		return nil
	}
	syscall.CloseOnExec(fd)
	return os.NewFile(uintptr(fd), "pidfd")
}

// watchExit reaps the moment the workload's main process exits, as told
// by its pidfd. SIGCHLD tells the same, but Go delivers a signal through
// two more goroutines (the runtime's signal receiver, then os/signal's
// loop), each on a thread that has to be woken first; the netpoller wakes
// this goroutine directly. It only makes the reaping sooner: wait4 is
// still called under r.mu, by reap, which collects every child that has
// changed state, and the SIGCHLD loop still runs for the orphans and in
// case this goroutine is late. It ends when the pidfd does (Close, or the
// workload's exit).
func (r *Reaper) watchExit(f *os.File) {
	defer f.Close()
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	err = rc.Read(func(fd uintptr) bool {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, 0)
		return err != nil || n > 0
	})
	if err == nil {
		r.reap()
	}
}

// reap collects every child that has changed state, and reports whether
// lockex still has children. After Close it does nothing.
func (r *Reaper) reap() (childrenLeft bool) {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return false
	}
	left, stopped := r.reapLocked()
	r.mu.Unlock()
	if stopped != nil {
		stopped.suspend()
	}
	return left
}

// reapLocked is reap with r.mu held; it returns the workload if a
// job-control stop (Ctrl-Z) stopped it, for the caller to pass on once
// r.mu is released.
func (r *Reaper) reapLocked() (childrenLeft bool, stopped *Process) {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG|syscall.WUNTRACED, nil)
		switch {
		case err == syscall.EINTR:
			continue
		case err != nil: // ECHILD: no children at all
			return false, stopped
		case pid == 0:
			return true, stopped
		}
		p := r.procs[pid]
		switch {
		case ws.Stopped():
			if p != nil && p.tty && isJobControlStop(ws.StopSignal()) {
				stopped = p
			}
		case p != nil:
			delete(r.procs, pid)
			p.exited(ws)
		default:
			r.log.Debug("reaped an orphan", "pid", pid, "status", describe(ws))
		}
	}
}

func describe(ws syscall.WaitStatus) string {
	if ws.Signaled() {
		return "killed by " + ws.Signal().String()
	}
	return fmt.Sprintf("exited %d", ws.ExitStatus())
}

func isJobControlStop(sig syscall.Signal) bool {
	return sig == syscall.SIGTSTP || sig == syscall.SIGTTIN || sig == syscall.SIGTTOU
}
