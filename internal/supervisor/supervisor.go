// Package supervisor is the lifecycle of one lockex run (docs/design.md
// §4): take the lock, start the workload under it, pass signals on, stop
// what ran under it and give the lock back; with --requeue, round after
// round (requeue.go). It owns the state and the stop policy; the lock, the
// processes, the clock and the reports come in through the small
// interfaces below, so it imports no ZooKeeper, no Prometheus and no
// syscalls beyond signal numbers.
//
// Every change of state goes through one function, to: the caller has
// already done what the change requires (sent the signals, released the
// lock), and to reports it, once, to the Observer. Acting never waits on
// reporting.
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
// asked, with a session of its own: an earlier one is closed first.
// Acquire returns when the lock is held; with wait false it looks once and
// fails with an exitcode.Busy error if the lock is taken. Both return
// ctx's error when ctx ends first, and in every error case have left
// nothing in ZooKeeper. Close ends the session, and with it every node of
// its own that is left (one whose release failed, or of a lost lease).
type Locker interface {
	Connect(ctx context.Context) error
	Acquire(ctx context.Context, wait bool) (Lease, error)
	Close()
}

// Lease is a held lock.
type Lease interface {
	Path() string
	Node() string
	Token() int64
	Waited() time.Duration
	// Done closes when the lock is lost, or will be unless the workload
	// stops within the kill grace; Err says why.
	Done() <-chan struct{}
	Err() error
	// KillBy is the latest moment the workload may still run: from then
	// on the server may expire the session, and another holder start. It
	// may have passed already when a loss is noticed late (lockex was
	// frozen).
	KillBy() time.Time
	Release() error
}

// Process is a running workload and everything it started.
type Process interface {
	Pid() int
	// Done closes when the workload's main process has exited.
	Done() <-chan struct{}
	ExitCode() int
	// Signal passes a signal on to the workload's process group.
	Signal(syscall.Signal) error
	// SignalAll sends a signal to everything that runs under the lock:
	// the workload's group, orphans handed to lockex, and what left the
	// group but not the workload's cgroup. It names what it signalled.
	SignalAll(syscall.Signal) []string
	// KillAll is SignalAll(SIGKILL), and kills the workload's cgroup
	// whole, including what forks meanwhile.
	KillAll() []string
	// Gone closes once nothing that ran under the lock is left. Its
	// first look is made before it returns: the channel comes back
	// closed if nothing was left to begin with.
	Gone() <-chan struct{}
	// Continued receives when lockex, stopped by job control with the
	// workload (Ctrl-Z), was continued; the workload stays stopped until
	// it is sent SIGCONT.
	Continued() <-chan struct{}
	// Interrupted reports the signal, SIGINT or SIGQUIT, that ended the
	// workload while it had the terminal's foreground: a user's Ctrl-C
	// or Ctrl-\, which reached the workload and not lockex. Valid once
	// Done is closed.
	Interrupted() (syscall.Signal, bool)
}

// Config is what Run needs.
type Config struct {
	Locker Locker
	// Start starts the workload with the lock's variables added to env.
	Start func(env []string) (Process, error)
	// Env is the workload's environment before the lock's variables.
	Env []string
	// Signals delivers the signals lockex is asked to pass on.
	Signals <-chan os.Signal
	// Health delivers the workload's health check's failures (nil without
	// a check): one for a running workload stops it as a loss would, and
	// the run ends with exitcode.Unhealthy.
	Health <-chan HealthFailure
	// Standby, if not nil, is the standby's own check (standby.go): the
	// run queues only while it passes. LockTimeout counts across the
	// checks too.
	Standby Standby
	// LockTimeout bounds the wait for the lock (not for ZooKeeper, which
	// the locker bounds): negative waits for ever, 0 looks once (flock
	// -w 0 is flock -n), more gives up after that long.
	LockTimeout  time.Duration
	BusyExitCode int
	MinHold      time.Duration
	// MaxRuntime, if not 0, is how long the workload may run: then it is
	// stopped as for a loss, and the run ends with exitcode.MaxRuntime.
	MaxRuntime time.Duration
	// Requeue makes a round follow each round, after a backoff (see
	// requeue.go), until a stopping signal ends it.
	Requeue Requeue
	// KillSignal and KillGrace stop what is still running under the lock
	// when it has to go: the signal (and SIGCONT), then SIGKILL after the
	// grace, or sooner if the lease's KillBy comes first.
	KillSignal syscall.Signal
	KillGrace  time.Duration
	// Drain, if not nil, is called when SIGTERM or SIGINT comes while the
	// workload runs, before the signal is passed on: it takes this run
	// out of what routes traffic to it (the pod's label), and returns a
	// channel that closes once that is done or given up on; it bounds its
	// own wait. The signal goes on when the channel closes, or at once
	// with a second such signal. A loss or the workload's exit meanwhile
	// is acted on as ever, never later: the drain is for a stop that
	// lockex is asked for, never for one the lock requires.
	Drain    func() <-chan struct{}
	Observer Observer
	// Log takes what is not a change of state: signals passed on, and a
	// stop that had to resort to SIGKILL.
	Log   *slog.Logger
	Clock Clock // nil for the system clock
}

// ErrLockTimeout is why a run gave up when --locktimeout passed.
var ErrLockTimeout = errors.New("lock timeout")

// ErrMaxRuntime is why lockex stopped a workload that ran for
// --max-runtime.
var ErrMaxRuntime = errors.New("max runtime passed")

// Run takes the lock, runs the workload and releases the lock, and returns
// lockex's exit code: the workload's, or one of package exitcode's. With
// c.Requeue it does so round after round, and returns the last round's.
func Run(ctx context.Context, c Config) int {
	if c.Clock == nil {
		c.Clock = SystemClock{}
	}
	r := &run{c: c, state: Starting}
	defer r.cleanUpAfterPanic()
	return r.loop(ctx)
}

// run is the state of one Run. Its channels and timers are nil while they
// do not matter, so that a select on them waits for the ones that do.
type run struct {
	c     Config
	state State
	done  bool // the final change was reported

	// ctx is lockex's life: a stopping signal cancels it, which ends the
	// wait for ZooKeeper or the lock, and any round after this one.
	ctx    context.Context
	cancel context.CancelCauseFunc

	between // what --requeue keeps from round to round (requeue.go)
	round   // this round's
}

// round is one round: a session, the wait for the lock, the workload, the
// release. Without --requeue, the only one.
type round struct {
	code int // the exit code, once known

	connected chan error
	// wait is this round's wait for the lock, within ctx: --locktimeout
	// ends it.
	wait      context.Context
	endWait   context.CancelCauseFunc
	acquired  chan acquired
	lockTimer Timer
	// queue is one stay in the queue, within wait: a standby that fails
	// its own check leaves it (standby.go), and queues again later in
	// the same round.
	queue   context.Context
	leave   context.CancelCauseFunc
	fit     bool  // the standby's check passed (and has not failed since)
	leaving bool  // the Acquire under way was told to leave the queue
	unfit   error // why the standby left the queue last
	// standbyErr is the standby check's last failure, for a give-up.
	standbyErr error
	waitTimed  bool // --locktimeout's timer was started for this round

	lease      Lease
	heldSince  time.Time
	released   bool
	releaseErr error

	proc       Process
	exited     <-chan struct{} // the workload's main process, while Running
	continued  <-chan struct{} // lockex continued after a job-control stop, while Running
	contTimer  Timer           // to look again whether the stopped workload may go on
	gone       <-chan struct{} // while a stop is under way
	stopped    bool            // everything that ran under the lock is gone
	drained    <-chan struct{} // while a drain is under way
	held       syscall.Signal  // the stop signal the drain holds back
	drainBegun bool            // a run drains once: then signals go on at once
	graceTimer Timer
	holdTimer  Timer     // --min-hold, once the workload exited
	runTimer   Timer     // --max-runtime, while the workload runs
	started    time.Time // when the workload started
}

type acquired struct {
	lease Lease
	err   error
}

func (r *run) loop(parent context.Context) int {
	r.ctx, r.cancel = context.WithCancelCause(parent)
	defer r.cancel(nil)
	r.connect()

	for {
		if r.state == Released || r.state == GaveUp {
			// The round is over: the end, or another round. A stopping
			// signal that came while it ended (found with the end of
			// what ran, which goes first) ends the loop after this
			// round, with this round's code.
			if sig, ok := r.pendingStop(); ok {
				r.cancel(StoppedBy{sig})
			}
			if !r.again() {
				r.done = true
				return r.code
			}
			r.backOff()
		}
		// A loss goes first: select picks at random among what is
		// ready, and a loss found with the workload's exit, the end of
		// what it left, or of --min-hold, all ready after a busy turn,
		// must still be acted on and reported as a loss (the lock was
		// lost while held: 76 if the workload may have run past it).
		select {
		case <-r.leaseDone():
			r.onLoss()
			continue
		default:
		}
		// Then the end of what ran: found with the grace's end, there is
		// nothing left to kill.
		select {
		case <-r.gone:
			r.onGone()
			continue
		default:
		}
		select {
		case err := <-r.connected:
			r.onConnected(err)
		case res := <-r.acquired:
			r.onAcquired(res)
		case <-timerC(r.lockTimer):
			r.lockTimer = nil
			if r.state == Checking {
				// No Acquire to end: the cause says why.
				why := fmt.Errorf("%w: --locktimeout %s passed before the standby passed its check", ErrLockTimeout, r.c.LockTimeout)
				if r.standbyErr != nil {
					why = fmt.Errorf("%w: %w", why, r.standbyErr)
				}
				r.endWait(why)
				r.giveUp(nil)
				continue
			}
			r.endWait(fmt.Errorf("%w: --locktimeout %s passed", ErrLockTimeout, r.c.LockTimeout))
		case sig := <-r.c.Signals:
			r.onSignal(sig.(syscall.Signal))
		case hf := <-r.c.Health:
			r.onUnhealthy(hf)
		case res := <-r.standbyResults():
			r.onStandby(res)
		case <-r.leaseDone():
			r.onLoss()
		case <-r.exited:
			r.onExit()
		case <-timerC(r.runTimer):
			r.runTimer = nil
			r.onMaxRuntime()
		case <-r.drained:
			r.endDrain()
		case <-r.continued:
			r.onContinued()
		case <-timerC(r.contTimer):
			r.contTimer = nil
			r.onContinued()
		case <-timerC(r.graceTimer):
			r.graceTimer = nil
			killed := r.proc.KillAll()
			r.c.Log.Warn("still running after the grace; sent SIGKILL", "grace", r.c.KillGrace, "targets", killed)
		case <-r.gone:
			r.onGone()
		case <-timerC(r.holdTimer):
			r.holdTimer = nil
			r.releaseIfDone()
		case <-timerC(r.backoffTimer):
			r.backoffTimer = nil
			r.connect()
		}
	}
}

// to moves to the state ch names and reports the move; whatever it
// required has been done by the caller.
func (r *run) to(ch Change) {
	ch.From, ch.At = r.state, r.c.Clock.Now()
	r.state = ch.To
	if r.c.Standby != nil {
		// The standby's check runs only while it decides something:
		// before the run queues and while it is queued, never once the
		// lock is held (then the workload's own check, if any, decides).
		if ch.To == Checking || ch.To == Waiting {
			r.c.Standby.Check(r.rounds)
		} else {
			r.c.Standby.Check(0)
		}
	}
	if ch.To == Released || ch.To == GaveUp {
		ch.Code = r.code
		r.ended = ch
	}
	if r.c.Observer != nil {
		r.c.Observer.Changed(ch)
	}
}

// connect begins a round: a session, then the wait for the lock.
func (r *run) connect() {
	r.newRound()
	r.connected = make(chan error, 1)
	r.rounds++
	r.to(Change{To: Connecting, Round: r.rounds})
	connected := r.connected
	go func() { connected <- r.c.Locker.Connect(r.ctx) }()
}

func (r *run) onConnected(err error) {
	r.connected = nil
	if err == nil {
		err = r.cause() // a signal (or the timeout) came as the session did
	}
	if err != nil {
		r.giveUp(err)
		return
	}
	r.hadSession = true
	// The round's first session starts its wait; one made after the
	// standby left the queue (standby.go) waits on within the same limit.
	if r.wait == nil {
		r.wait, r.endWait = context.WithCancelCause(r.ctx)
	}
	r.queueOrCheck()
}

// timeWait starts --locktimeout once per round, as the round's wait
// begins (queued, or checking before it queues).
func (r *run) timeWait() {
	if r.waitTimed {
		return
	}
	r.waitTimed = true
	if r.c.LockTimeout > 0 {
		r.lockTimer = r.c.Clock.NewTimer(r.c.LockTimeout)
	}
}

func (r *run) onAcquired(res acquired) {
	r.acquired = nil
	if r.leaving && res.lease == nil && errors.Is(res.err, context.Canceled) && r.cause() == nil {
		// Left the queue for the standby's check, not for the round's
		// end: check until it passes, then queue again at the back. An
		// answer the recipe had before it saw the cancel (the lock
		// taken, with one look) is acted on as ever.
		r.leftQueue()
		return
	}
	if r.leaving && res.err == nil {
		// The lock came as the standby was leaving the queue: it is
		// held, and kept (docs/design.md §4.7).
		r.c.Log.Warn("the lock came as the standby left the queue for its check; holding it", "err", r.unfit)
	}
	r.leaving = false
	stopTimer(&r.lockTimer)
	if res.err != nil {
		if res.lease != nil {
			// Against the Locker's contract; the lock is not kept for
			// nothing all the same.
			r.lease = res.lease
			r.release()
		}
		r.giveUp(res.err)
		return
	}
	if cause := context.Cause(r.wait); cause != nil {
		// Taken just as a signal or the timeout came: the workload was
		// not started, so give the lock back.
		r.lease = res.lease
		r.release()
		r.giveUp(cause)
		return
	}
	r.lease, r.heldSince = res.lease, r.c.Clock.Now()
	r.to(Change{To: Holding, Node: r.lease.Node(), Token: r.lease.Token(), Waited: r.lease.Waited()})

	if r.lease.Err() != nil {
		r.onLoss()
		return
	}
	if sig, ok := pendingStop(r.c.Signals); ok {
		// Told to stop just as the lock came: do not start what would
		// only be stopped again, nor another round.
		r.cancel(StoppedBy{sig})
		r.code = exitcode.Signal(sig)
		r.release()
		r.to(Change{To: Released, Err: StoppedBy{sig}, ReleaseErr: r.releaseErr})
		return
	}
	proc, err := r.c.Start(slices.Concat(r.c.Env, []string{
		"LOCKEX_LOCK_PATH=" + r.lease.Path(),
		"LOCKEX_LOCK_NODE=" + r.lease.Node(),
		"LOCKEX_FENCING_TOKEN=" + strconv.FormatInt(r.lease.Token(), 10),
	}))
	if err != nil {
		r.code = exitcode.Of(err)
		r.stopped = true
		r.release()
		r.to(Change{To: Released, Err: err, ReleaseErr: r.releaseErr})
		return
	}
	r.proc, r.exited, r.continued = proc, proc.Done(), proc.Continued()
	r.started = r.c.Clock.Now()
	if r.c.MaxRuntime > 0 {
		r.runTimer = r.c.Clock.NewTimer(r.c.MaxRuntime)
	}
	r.to(Change{To: Running, Pid: proc.Pid()})
}

// contRecheck is how often a workload left stopped after lockex was
// continued late is looked at again: should the lease, not lost after
// all, have been renewed meanwhile, it goes on.
const contRecheck = 100 * time.Millisecond

// onContinued continues the workload after a job-control stop of both, if
// the lease still vouches for the lock: lockex may have been stopped past
// the lease's deadline (KillBy less the grace), the session may have
// expired, and another holder may run now. Then the workload stays
// stopped: the lease is about to be lost (its own deadline passed), and
// the stop that follows continues it only to act on the kill signal
// within what is left before KillBy, or SIGKILLs it.
func (r *run) onContinued() {
	if r.state != Running {
		return
	}
	if deadline := r.lease.KillBy().Add(-r.c.KillGrace); !r.c.Clock.Now().Before(deadline) {
		if r.contTimer == nil {
			r.c.Log.Warn("lockex was stopped past its lease's deadline; the workload stays stopped", "pid", r.proc.Pid(), "deadline", deadline)
		}
		stopTimer(&r.contTimer)
		r.contTimer = r.c.Clock.NewTimer(contRecheck)
		return
	}
	stopTimer(&r.contTimer)
	err := r.proc.Signal(syscall.SIGCONT)
	r.c.Log.Info("continued; continuing the workload", "pid", r.proc.Pid())
	if err != nil {
		r.c.Log.Debug("signal not delivered", "signal", syscall.SIGCONT.String(), "err", err)
	}
}

// giveUp ends a run that never held the lock, with the exit code for why.
func (r *run) giveUp(err error) {
	if cause := r.cause(); cause != nil {
		err = cause // the run cancelled the wait itself, and knows why
	}
	var stop StoppedBy
	switch {
	case errors.As(err, &stop):
		r.code = exitcode.Signal(stop.Signal)
	case errors.Is(err, ErrLockTimeout), errors.Is(err, ErrStandbyUnfit), exitcode.Of(err) == exitcode.Busy:
		r.code = r.c.BusyExitCode
	default:
		r.code = exitcode.Of(err)
	}
	r.to(Change{To: GaveUp, Err: err})
}

// cause is why the run ended its own wait for ZooKeeper or the lock: a
// stopping signal, or --locktimeout; nil if it did not.
func (r *run) cause() error {
	if r.wait != nil {
		return context.Cause(r.wait) // the life's cause too
	}
	return context.Cause(r.ctx)
}

func (r *run) onSignal(sig syscall.Signal) {
	stops := Stops(sig)
	if r.state == Running {
		stops = endsRequeue(sig) // the others are the workload's business
	}
	if stops {
		r.cancel(StoppedBy{sig}) // no round after this one
	}
	switch r.state {
	case Running:
		if drains(sig) && r.c.Drain != nil {
			if !r.drainBegun {
				r.drainBegun = true
				r.held, r.drained = sig, r.c.Drain()
				r.c.Log.Info("draining before passing the signal on", "signal", sig.String(), "pid", r.proc.Pid())
				return
			}
			r.endDrain() // asked twice: no more waiting
		}
		r.forward(sig)
	case Backoff:
		if stops {
			stopTimer(&r.backoffTimer)
			r.giveUp(StoppedBy{sig})
		}
	case Checking:
		// No Acquire to end (nothing queued); a connect or an Acquire
		// under way ends with ctx, and gives up then.
		if stops {
			stopTimer(&r.lockTimer)
			r.giveUp(StoppedBy{sig})
		}
	case Holding, Stopping:
		// Kept for --min-hold: a signal ends that.
		if stops && r.holdTimer != nil {
			stopTimer(&r.holdTimer)
			r.releaseIfDone()
		}
	}
}

func (r *run) forward(sig syscall.Signal) {
	err := r.proc.Signal(sig)
	r.c.Log.Info("forwarded signal to workload", "signal", sig.String(), "pid", r.proc.Pid())
	if err != nil {
		r.c.Log.Debug("signal not delivered", "signal", sig.String(), "err", err)
	}
}

// drains reports whether sig asks the workload to stop for good, so that
// it is drained first: a kubelet's, a runtime's or a terminal's stop.
// Other signals (a reload's SIGHUP, SIGUSR1) go on at once.
func drains(sig syscall.Signal) bool { return sig == syscall.SIGTERM || sig == syscall.SIGINT }

// endDrain passes on the signal the drain held back.
func (r *run) endDrain() {
	r.drained = nil
	if sig := r.held; sig != 0 {
		r.held = 0
		r.forward(sig)
	}
}

// onLoss stops all that runs under the lock, then reports the loss.
func (r *run) onLoss() {
	late := r.c.Clock.Now().Sub(r.lease.KillBy())
	var stopping []string
	running := r.state == Running || (r.proc != nil && !r.stopped)
	switch {
	case r.state == Running:
		r.code = exitcode.LockLost
		stopping = r.startStop()
	case r.proc == nil:
		r.code = exitcode.LockLost // lost before the workload started
	case r.stopped:
		// All of it ended under the lock: its code stands.
	default:
		if r.state == Stopping {
			// Cut short by lockex, not run to its end, and the stop
			// is not over: the workload may run past the lock.
			r.code = exitcode.LockLost
		}
		if late > 0 {
			// What is still being stopped may run no longer.
			stopping = r.proc.KillAll()
		}
	}
	if late < 0 || !running {
		late = 0 // Late says that something was SIGKILLed without grace
	}
	stopTimer(&r.holdTimer) // a lost lock is not kept for --min-hold
	r.to(Change{To: Lost, Err: r.lease.Err(), Late: late, Stopping: stopping})
	r.releaseIfDone()
}

// onExit stops what the workload left under the lock, then reports its
// exit: nothing started under the lock may outlive it.
func (r *run) onExit() {
	r.exited = nil
	r.code = r.proc.ExitCode()
	if sig, ok := r.proc.Interrupted(); ok {
		// Meant for lockex too, as a shell's loop ends when the command
		// in it is interrupted: no round after this one.
		r.cancel(StoppedBy{sig})
	}
	stopping := r.startStop()
	r.to(Change{To: Holding, WorkloadCode: r.code, Stopping: stopping, MinHold: r.keepForMinHold()})
}

// onMaxRuntime stops the workload that ran for --max-runtime (stopFor).
// Once the stop began, the code is exitcode.MaxRuntime, whatever the
// workload then exits with, as timeout(1) does.
func (r *run) onMaxRuntime() {
	r.stopFor(exitcode.MaxRuntime, 0, fmt.Errorf("%w: the workload ran for --max-runtime %s", ErrMaxRuntime, r.c.MaxRuntime))
}

// keepForMinHold starts the --min-hold timer for what is left of it once
// the workload ended or is being stopped, and returns that.
func (r *run) keepForMinHold() time.Duration {
	hold := r.heldSince.Add(r.c.MinHold).Sub(r.c.Clock.Now())
	if hold <= 0 {
		return 0
	}
	r.holdTimer = r.c.Clock.NewTimer(hold)
	return hold
}

// onUnhealthy stops the running workload that failed its health check
// (stopFor); the run ends with exitcode.Unhealthy. A verdict on a
// workload that no longer runs is dropped.
func (r *run) onUnhealthy(hf HealthFailure) {
	if r.state != Running || hf.Pid != r.proc.Pid() {
		return
	}
	r.stopFor(exitcode.Unhealthy, hf.Pid, fmt.Errorf("%w %d times in a row: %w", ErrUnhealthy, hf.Failures, hf.Err))
}

// stopFor stops the running workload for a reason of lockex's own (why,
// ending the run with code) as a loss stops it, then reports the move to
// Stopping; the lock is released once all of it is gone and --min-hold
// has passed. A loss or the workload's own exit, found in the same turn,
// goes first: the loss is the lock's, and a workload that exited by
// itself before lockex acted keeps its own code.
func (r *run) stopFor(code, pid int, why error) {
	select {
	case <-r.leaseDone():
		r.onLoss()
		return
	case <-r.exited:
		r.onExit()
		return
	default:
	}
	r.code = code
	stopping := r.startStop()
	r.to(Change{To: Stopping, Pid: pid, Stopping: stopping, MinHold: r.keepForMinHold(), Err: why})
}

// startStop begins the stop of everything under the lock: the kill signal
// and SIGCONT (a stopped process must run to act on it), then SIGKILL
// when the grace is over. The grace ends by the lease's KillBy; with no
// grace left, SIGKILL goes at once. A workload that exited and left
// nothing behind, the common end, is gone already: there is nothing to
// signal, and the release is not delayed by looks for what is not there.
func (r *run) startStop() []string {
	r.exited, r.continued = nil, nil
	// A stop under way supersedes a drain: its signals go to everything.
	r.drained, r.held = nil, 0
	stopTimer(&r.contTimer)
	stopTimer(&r.runTimer)
	r.gone = r.proc.Gone()
	select {
	case <-r.gone:
		return nil
	default:
	}
	grace := min(r.c.KillGrace, r.lease.KillBy().Sub(r.c.Clock.Now()))
	if grace <= 0 {
		return r.proc.KillAll()
	}
	signalled := r.proc.SignalAll(r.c.KillSignal)
	r.proc.SignalAll(syscall.SIGCONT)
	r.graceTimer = r.c.Clock.NewTimer(grace)
	return signalled
}

func (r *run) onGone() {
	r.gone, r.stopped = nil, true
	stopTimer(&r.graceTimer)
	r.releaseIfDone()
}

// releaseIfDone gives the lock back once nothing runs under it any more
// and --min-hold (unless lost) has passed.
func (r *run) releaseIfDone() {
	if (r.proc != nil && !r.stopped) || r.holdTimer != nil {
		return
	}
	r.release()
	r.to(Change{To: Released, ReleaseErr: r.releaseErr})
}

func (r *run) release() {
	if r.released {
		return
	}
	r.released = true
	r.releaseErr = r.lease.Release()
}

// leaseDone is the lease's loss, while it matters.
func (r *run) leaseDone() <-chan struct{} {
	if r.lease == nil || r.released || r.state == Lost {
		return nil
	}
	return r.lease.Done()
}

// cleanUpAfterPanic runs as Run returns. After a panic (in an observer,
// say) the lock must not be given away while the workload still runs:
// kill all of it, wait, release, and let the panic go on unrecovered,
// with its own stack trace. If the kill itself panics, the lock is not
// released: the session ends with lockex, and the workload with it (it
// has a parent-death signal).
func (r *run) cleanUpAfterPanic() {
	if r.done {
		return
	}
	if r.proc != nil && !r.stopped {
		r.proc.KillAll()
		<-r.proc.Gone()
	}
	if r.lease != nil {
		r.release()
	}
}

// Stops reports whether sig, sent to lockex before or after the workload
// runs, means "stop": every signal passed on does but SIGWINCH, a resized
// terminal, which is passed on to a running workload and otherwise ignored.
func Stops(sig os.Signal) bool { return sig != syscall.SIGWINCH }

// pendingStop takes a signal that arrived and would have stopped the wait
// for the lock, if there is one.
func pendingStop(signals <-chan os.Signal) (syscall.Signal, bool) {
	for {
		select {
		case sig := <-signals:
			if Stops(sig) {
				return sig.(syscall.Signal), true
			}
		default:
			return 0, false
		}
	}
}

func timerC(t Timer) <-chan time.Time {
	if t == nil {
		return nil
	}
	return t.C()
}

func stopTimer(t *Timer) {
	if *t != nil {
		(*t).Stop()
		*t = nil
	}
}
