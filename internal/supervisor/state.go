package supervisor

import (
	"errors"
	"strconv"
	"syscall"
	"time"
)

// State is where one run of lockex is (docs/design.md §4).
type State int

const (
	Starting   State = iota
	Connecting       // reaching ZooKeeper
	Waiting          // queued for the lock
	Holding          // lock held, workload not running: not yet, or no more
	Running          // lock held, workload running
	Lost             // lock lost, or about to be; what ran under it is being stopped
	Released         // lock given back; lockex exits, or with --requeue backs off
	GaveUp           // the round ends without the lock; lockex exits, or with --requeue backs off
	Stopping         // lock held; lockex stops the workload for a reason of its own (--max-runtime, a failed health check)
	Backoff          // --requeue: a round ended, the next begins after a backoff
	Checking         // connected; the standby's own check has not passed: not queued
)

var stateNames = [...]string{"starting", "connecting", "waiting", "holding", "running", "lost", "released", "gave_up", "stopping", "backoff", "checking"}

func (s State) String() string {
	if s < 0 || int(s) >= len(stateNames) {
		return "state(" + strconv.Itoa(int(s)) + ")"
	}
	return stateNames[s]
}

// Change is one move from one state to another, reported once it has been
// acted on: the signals it required are sent, the lock it gave back is
// released. The fields a move does not set are zero.
type Change struct {
	From, To State
	At       time.Time

	// Waiting → Holding: the lock.
	Node   string
	Token  int64
	Waited time.Duration

	// → Running, → Stopping: the workload's pid. Running → Holding: its
	// exit code.
	Pid          int
	WorkloadCode int

	// Stopping lists what was sent the kill signal on the way out of
	// Running (the workload's group, orphans, strays), in words.
	Stopping []string
	// MinHold is how much longer the lock is kept for --min-hold, on
	// Running → Holding and Running → Stopping.
	MinHold time.Duration

	// → Stopping: Err is why lockex stops the workload (ErrMaxRuntime, ErrUnhealthy).
	// → Lost: Err is why. Late is set when the loss was noticed after
	// the lease's KillBy had passed: everything was sent SIGKILL at once.
	// → GaveUp: Err is why (ErrLockTimeout, ErrStandbyUnfit, StoppedBy, a
	// locker error). Waiting → Connecting: Err is why the standby left the
	// queue (ErrStandbyUnfit).
	// → Released: Err is why the workload never started (StoppedBy, or
	// its start failed), ReleaseErr why the lock's node was not deleted.
	Err        error
	Late       time.Duration
	ReleaseErr error

	// → Released or → GaveUp: the round's exit code, lockex's unless
	// --requeue begins another round.
	Code int

	// → Connecting: the round it begins (1 for the first). → Backoff: the
	// round that begins after Backoff, and whether the ended round's
	// session was closed (the next round makes a new one in any case).
	Round         int
	Backoff       time.Duration
	SessionClosed bool
}

// Observer is told of every change, in order, exactly once, after what the
// change required was done. It feeds logs, metrics and probes; it must not
// block for long (package status never does).
type Observer interface {
	Changed(Change)
}

// StoppedBy is why a run gave up or ended early: a terminating signal.
type StoppedBy struct{ Signal syscall.Signal }

func (s StoppedBy) Error() string { return "stopped by " + s.Signal.String() }

// HealthFailure is the workload's health check's verdict: workload Pid
// failed it Failures times in a row, the last time with Err. The checker
// sends it once per workload, when Failures reaches its threshold.
type HealthFailure struct {
	Pid      int
	Failures int
	Err      error
}

// ErrUnhealthy is why a run stopped its workload for its health check.
var ErrUnhealthy = errors.New("workload failed its health check")
