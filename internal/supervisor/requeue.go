package supervisor

import (
	"errors"
	"syscall"
	"time"

	"github.com/lockex/lockex/internal/exitcode"
)

// Requeue is --requeue (docs/design.md §4.5): once a round has ended and
// given the lock back, wait, and contend again, for as long as lockex is
// not told to stop.
type Requeue struct {
	On bool
	// Backoff is the first wait between two rounds. It doubles after each
	// round that ends sooner than MaxBackoff after its workload started
	// (or that never started it), up to MaxBackoff, and is Backoff again
	// after one that ran longer: a workload that fails at once is not
	// restarted in a tight loop, one that failed after a long run is
	// restarted soon.
	Backoff, MaxBackoff time.Duration
}

// between is what a run keeps from one round to the next.
type between struct {
	rounds     int    // rounds begun
	ended      Change // how the last round ended
	hadSession bool   // some round got a session
	// backoff is the wait after the next round, 0 for Requeue.Backoff.
	backoff      time.Duration
	backoffTimer Timer
}

// again reports whether another round follows the one that just ended:
// with --requeue, unless a stopping signal (or the caller) ended lockex's
// life, or the round ended for a reason that waiting does not mend.
func (r *run) again() bool {
	ch := r.ended
	switch {
	case !r.c.Requeue.On, r.ctx.Err() != nil:
		return false
	case r.interrupted():
		// Ctrl-C while lockex was stopping the workload (at
		// --max-runtime, after a loss): the key reached the workload,
		// which still had the foreground, and not lockex.
		return false
	case ch.To == GaveUp && exitcode.Of(ch.Err) == exitcode.Usage:
		return false // a semaphore's size, --kill-grace against the granted timeout
	case ch.To == GaveUp && !r.hadSession:
		// The first session never came: a wrong --zkhosts, TLS or
		// credentials fail at once (69), as without --requeue. Once
		// lockex has had a session, an unreachable ZooKeeper is an
		// outage to wait out.
		return false
	}
	return true
}

// interrupted reports whether a key typed at the terminal ended this
// round's workload: onExit sees it as the workload exits, but a workload
// that lockex was stopping already exits unseen. With --kill-signal INT
// or QUIT, the signal of that stop is lockex's own, not a key's.
func (r *run) interrupted() bool {
	if r.proc == nil {
		return false
	}
	sig, ok := r.proc.Interrupted()
	return ok && sig != r.c.KillSignal
}

// backOff ends a round that is to be followed by another: whatever the
// round may have left in ZooKeeper goes with its session, then the wait.
// A round that gave its lock back cleanly, or only found it taken, keeps
// its session through the wait (readiness, §8, stays up); the next round
// makes a new one in any case, so that no node of an earlier round can be
// queued ahead of it.
func (r *run) backOff() {
	ch := r.ended
	// r.releaseErr too: a lock taken just as --locktimeout passed is
	// given back on the way to GaveUp, and its node may not have gone.
	clean := r.releaseErr == nil && (ch.To == Released && ch.From != Lost ||
		ch.To == GaveUp && (errors.Is(ch.Err, ErrLockTimeout) || errors.Is(ch.Err, ErrStandbyUnfit) || exitcode.Of(ch.Err) == exitcode.Busy))
	if !clean {
		r.c.Locker.Close()
	}
	if !r.round.started.IsZero() && r.c.Clock.Now().Sub(r.round.started) >= r.c.Requeue.MaxBackoff {
		r.backoff = 0 // it ran well for long enough
	}
	d := r.backoff
	if d == 0 {
		d = r.c.Requeue.Backoff
	}
	r.backoff = r.c.Requeue.MaxBackoff
	if d < r.c.Requeue.MaxBackoff/2 {
		r.backoff = 2 * d // else it may overflow
	}
	r.newRound()
	r.backoffTimer = r.c.Clock.NewTimer(d)
	r.to(Change{To: Backoff, Backoff: d, Round: r.rounds + 1, SessionClosed: !clean})
}

// newRound forgets the round that ended: its wait's cause (a lock
// timeout) must not be taken for why a later round ends.
func (r *run) newRound() {
	if r.endWait != nil {
		r.endWait(nil) // else kept in ctx for ever
	}
	r.round = round{}
}

// pendingStop takes a stopping signal that arrived as the round ended,
// with --requeue: without, none is taken, for the wait for the last
// scrape to see (internal/app).
func (r *run) pendingStop() (syscall.Signal, bool) {
	if !r.c.Requeue.On || r.ctx.Err() != nil {
		return 0, false
	}
	return pendingStop(r.c.Signals)
}

// endsRequeue reports whether sig, arriving while the workload runs, ends
// lockex's life after this round: TERM, INT and QUIT, what orchestrators,
// service managers and the terminal send to stop. The others are passed
// on and left to the workload: HUP, USR1 and USR2 commonly mean reload or
// reopen the logs to a daemon. In any other state every signal but
// SIGWINCH stops lockex, as without --requeue.
func endsRequeue(sig syscall.Signal) bool {
	return sig == syscall.SIGTERM || sig == syscall.SIGINT || sig == syscall.SIGQUIT
}
