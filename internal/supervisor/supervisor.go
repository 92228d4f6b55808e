// Package supervisor decides what lockex does, and when: take the lock,
// start the workload under it, pass signals on, release the lock the moment
// the workload ends. It owns the policy; the lock, the process and the
// signals come in through the small interfaces below, so it imports no
// ZooKeeper, no Prometheus and no syscalls beyond signal numbers.
package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/lockex/lockex/internal/exitcode"
)

// Locker takes the lock. Connect returns once the lock service can be
// asked; Acquire returns when the lock is held. Both return an error
// carrying an exit code when they cannot, or ctx's error when ctx ends
// first, and in every error case have left nothing in ZooKeeper.
type Locker interface {
	Connect(ctx context.Context) error
	Acquire(ctx context.Context) (Lease, error)
}

// Lease is a held lock.
type Lease interface {
	Path() string
	Node() string
	Token() int64
	Waited() time.Duration
	// Done closes when the lock is lost, or will be unless the workload
	// stops within KillGrace; Err says why.
	Done() <-chan struct{}
	Err() error
	// KillBy is the latest moment the workload may still run: from then
	// on the server may expire the session, and another holder start.
	// It may have passed already when a loss is noticed late (lockex was
	// frozen).
	KillBy() time.Time
	Release() error
}

// Process is a running workload.
type Process interface {
	Pid() int
	// Done closes when the workload's main process has exited.
	Done() <-chan struct{}
	ExitCode() int
	// Signal sends a signal to the workload's process group.
	Signal(syscall.Signal) error
	// StartStop ends whatever still runs under the lock: sig, sent to all
	// of it before StartStop returns, then SIGKILL once grace has passed
	// (at once if grace is 0). The channel closes when all of it is gone.
	StartStop(sig syscall.Signal, grace time.Duration) <-chan struct{}
}

// resumer is a Process that continues itself when lockex is continued
// after a job-control stop of both; it asks first whether the lock may
// still be held.
type resumer interface {
	ResumeOnlyIf(may func() bool)
}

// Observer is told of the lock's and the workload's changes, for logs,
// metrics and probes; it logs them, so Run does not.
type Observer interface {
	Acquired(node string, token int64, waited time.Duration)
	WorkloadStarted(pid int)
	WorkloadExited(code int)
	Lost(err error)
	Released()
}

type nopObserver struct{}

func (nopObserver) Acquired(string, int64, time.Duration) {}
func (nopObserver) WorkloadStarted(int)                   {}
func (nopObserver) WorkloadExited(int)                    {}
func (nopObserver) Lost(error)                            {}
func (nopObserver) Released()                             {}

// Config is what Run needs.
type Config struct {
	Locker Locker
	// Start starts the workload with the lock's variables added to env.
	Start func(env []string) (Process, error)
	// Env is the workload's environment before the lock's variables.
	Env []string
	// Signals delivers the signals lockex is asked to pass on.
	Signals <-chan os.Signal
	// LockTimeout bounds the wait for the lock; 0 or less waits for ever.
	LockTimeout  time.Duration
	BusyExitCode int
	MinHold      time.Duration
	// KillSignal and KillGrace stop what is still running under the lock
	// when it has to go: the signal, then SIGKILL after the grace.
	KillSignal syscall.Signal
	KillGrace  time.Duration
	Observer   Observer
	Log        *slog.Logger
}

// errLockTimeout is the cause of an acquire cancelled by --locktimeout.
var errLockTimeout = errors.New("supervisor: lock timeout")

// stoppedBy is the cause of an acquire cancelled by a signal.
type stoppedBy struct{ sig syscall.Signal }

func (s stoppedBy) Error() string { return "stopped by " + s.sig.String() }

// Run takes the lock, runs the workload and releases the lock, and returns
// lockex's exit code: the workload's, or one of package exitcode's.
func Run(ctx context.Context, c Config) int {
	if c.Observer == nil {
		c.Observer = nopObserver{}
	}
	lease, code, ok := acquire(ctx, c)
	if !ok {
		return code
	}
	c.Observer.Acquired(lease.Node(), lease.Token(), lease.Waited())
	heldSince := time.Now()
	// unstopped is the workload from its start until Run has stopped it.
	// A panic in between (in an observer, say) must not give the lock
	// away while the workload still runs: stop all of it first, at once,
	// and let the panic go on unrecovered, with its own stack trace. If
	// the stop itself panics, the lock is not released: the session ends
	// with lockex, and the workload with it (it has a parent-death signal).
	var unstopped Process
	defer func() {
		if unstopped != nil {
			<-unstopped.StartStop(syscall.SIGKILL, 0)
		}
		release(c, lease)
	}()

	if err := lease.Err(); err != nil {
		c.Log.Error("lock lost before the workload started", "reason", err)
		return exitcode.LockLost
	}
	if sig, ok := pendingStop(c.Signals); ok {
		// Told to stop just as the lock came: do not start what would
		// only be stopped again.
		c.Log.Warn("stopped before the workload started", "signal", sig.String())
		return exitcode.Signal(sig)
	}
	proc, err := c.Start(slices.Concat(c.Env, []string{
		"LOCKEX_LOCK_PATH=" + lease.Path(),
		"LOCKEX_LOCK_NODE=" + lease.Node(),
		"LOCKEX_FENCING_TOKEN=" + strconv.FormatInt(lease.Token(), 10),
	}))
	if err != nil {
		c.Log.Error("workload did not start", "err", err)
		return exitcode.Of(err)
	}
	unstopped = proc
	if r, ok := proc.(resumer); ok {
		// Stopped by job control with lockex (Ctrl-Z) for longer than
		// the session may outlive, the workload is not continued with
		// lockex (fg): the next holder's may be running by then.
		r.ResumeOnlyIf(func() bool { return lease.Err() == nil && time.Now().Before(lease.KillBy()) })
	}
	c.Observer.WorkloadStarted(proc.Pid())
	code, lost := supervise(c, lease, proc)
	unstopped = nil
	if lost {
		return code
	}
	holdUntil(c, lease, heldSince.Add(c.MinHold))
	return code
}

// acquire waits for the lock until it is held, --locktimeout passes, or a
// terminating signal arrives.
func acquire(ctx context.Context, c Config) (Lease, int, bool) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	type result struct {
		lease Lease
		err   error
	}
	done := make(chan result, 1)
	go func() {
		// --locktimeout bounds the wait for the lock, not for ZooKeeper:
		// -T and -R bound that, and its failure has an exit code of its own.
		if err := c.Locker.Connect(ctx); err != nil {
			done <- result{nil, err}
			return
		}
		actx := ctx
		if c.LockTimeout > 0 {
			var cancelTimeout context.CancelFunc
			actx, cancelTimeout = context.WithTimeoutCause(ctx, c.LockTimeout, errLockTimeout)
			defer cancelTimeout()
		}
		lease, err := c.Locker.Acquire(actx)
		if err == nil && actx.Err() != nil {
			// Taken just as the timeout passed: too late, give it back.
			release(c, lease)
			lease, err = nil, context.Cause(actx)
		}
		done <- result{lease, err}
	}()
	var r result
	for waiting := true; waiting; {
		select {
		case sig := <-c.Signals:
			// A resized terminal is no reason to give up the wait.
			if sig != syscall.SIGWINCH {
				cancel(stoppedBy{sig.(syscall.Signal)})
			}
		case r = <-done:
			waiting = false
		}
	}
	if r.err == nil && ctx.Err() == nil {
		return r.lease, 0, true
	}
	if r.err == nil {
		// Taken just as a signal or the timeout arrived: the workload
		// was not started, so give the lock back.
		release(c, r.lease)
		r.err = context.Cause(ctx)
	}
	err := r.err
	var stop stoppedBy
	switch cause := context.Cause(ctx); {
	case errors.As(cause, &stop):
		c.Log.Warn("stopped while waiting for the lock", "signal", stop.sig.String())
		return nil, exitcode.Signal(stop.sig), false
	case errors.Is(err, errLockTimeout), errors.Is(err, context.DeadlineExceeded):
		c.Log.Warn("lock not acquired", "reason", fmt.Sprintf("--locktimeout %s passed", c.LockTimeout))
		return nil, c.BusyExitCode, false
	}
	code := exitcode.Of(err)
	if code == exitcode.Busy {
		c.Log.Warn("lock not acquired", "reason", "taken, and --no-blocking", "err", err)
		return nil, c.BusyExitCode, false
	}
	c.Log.Error("lock not acquired", "err", err)
	return nil, code, false
}

// pendingStop takes a signal that arrived and would have stopped the wait
// for the lock, if there is one.
func pendingStop(signals <-chan os.Signal) (syscall.Signal, bool) {
	for {
		select {
		case sig := <-signals:
			if sig != syscall.SIGWINCH {
				return sig.(syscall.Signal), true
			}
		default:
			return 0, false
		}
	}
}

// supervise passes signals on to the workload until it exits, or the lock
// is lost (then lost is set and code is 76), and returns once all that ran
// under the lock is gone. It acts first and reports after: a report is a
// log line, and a log line may wait on stderr (package app wires in a log
// writer that never blocks; this order does not rely on it).
func supervise(c Config, lease Lease, proc Process) (code int, lost bool) {
	for {
		select {
		case sig := <-c.Signals:
			s := sig.(syscall.Signal)
			err := proc.Signal(s)
			c.Log.Info("forwarded signal to workload", "signal", s.String(), "pid", proc.Pid())
			if err != nil {
				c.Log.Debug("signal not delivered", "signal", s.String(), "err", err)
			}
		case <-proc.Done():
			// Nothing started under the lock may outlive it: a background
			// child of the workload, or a daemon it left to lockex, would
			// otherwise run next to the next holder's workload.
			gone := stop(c, proc, graceFor(c, lease))
			c.Observer.WorkloadExited(proc.ExitCode())
			<-gone
			return proc.ExitCode(), false
		case <-lease.Done():
			grace := graceFor(c, lease)
			gone := stop(c, proc, grace)
			c.Observer.Lost(lease.Err())
			if grace <= 0 {
				c.Log.Warn("loss noticed after the session may have expired: SIGKILL without grace",
					"late", (-grace).Round(time.Millisecond))
			}
			<-gone
			c.Log.Error("workload stopped because the lock was lost", "reason", lease.Err())
			return exitcode.LockLost, true
		}
	}
}

// stop starts stopping all that runs under the lock: c.KillSignal, then
// SIGKILL after grace; SIGKILL at once if no grace is left.
func stop(c Config, proc Process, grace time.Duration) <-chan struct{} {
	if grace > 0 {
		return proc.StartStop(c.KillSignal, grace)
	}
	return proc.StartStop(syscall.SIGKILL, 0)
}

// graceFor is --kill-grace, or less if the lease's KillBy comes sooner: all
// that runs under the lock must be dead by then. It is 0 or less if KillBy
// has passed (the loss was noticed late: lockex was frozen).
func graceFor(c Config, lease Lease) time.Duration {
	return min(c.KillGrace, time.Until(lease.KillBy()))
}

// holdUntil keeps the lock until t (--min-hold), so that a cron job fired a
// little later on another host still finds it taken; a signal ends it.
func holdUntil(c Config, lease Lease, t time.Time) {
	wait := time.Until(t)
	if wait <= 0 {
		return
	}
	c.Log.Info("holding the lock for --min-hold", "remaining", wait.Round(time.Millisecond))
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		select {
		case <-timer.C:
			return
		case <-lease.Done():
			return
		case sig := <-c.Signals:
			if sig != syscall.SIGWINCH {
				return
			}
		}
	}
}

func release(c Config, lease Lease) {
	if err := lease.Release(); err != nil {
		c.Log.Warn("lock node not deleted; the session's end removes it", "node", lease.Node(), "err", err)
	}
	c.Observer.Released()
}
