package supervisor

import (
	"context"
	"errors"
	"fmt"
)

// Standby is the standby's own check (--standby-url, --standby-cmd;
// docs/design.md §4.7): a run that has one queues for the lock only once
// the check passes, and leaves the queue when it fails its threshold in a
// row. The check itself, its period and its count of failures are the
// caller's; what a result means is the supervisor's.
type Standby interface {
	// Check asks for checks on behalf of round (1 for the first), the
	// first at once, afresh when the round is another than the last one
	// asked for (not fit until a check passes); 0 stops the checks. It
	// never blocks.
	Check(round int)
	// Results delivers each check's result. Results of a round that is
	// over, or that come once the lock is held, are dropped.
	Results() <-chan StandbyResult
}

// StandbyResult is the standby's fitness after one check of Round.
type StandbyResult struct {
	Round int
	// Fit: a check passed, and it has not failed its threshold in a row
	// since.
	Fit bool
	// Failures counts the consecutive failed checks up to this one; Err
	// is this check's failure, nil if it passed.
	Failures int
	Err      error
}

// ErrStandbyUnfit is why a standby left the queue, or gave up at once
// (one look: --no-blocking, -t 0): its own check failed.
var ErrStandbyUnfit = errors.New("standby check failed")

// standbyResults is the checks' results, while a check is configured.
func (r *run) standbyResults() <-chan StandbyResult {
	if r.c.Standby == nil {
		return nil
	}
	return r.c.Standby.Results()
}

// queueOrCheck follows a session of this round: a standby with a check
// queues once it passed; one without queues at once.
func (r *run) queueOrCheck() {
	if r.c.Standby != nil && !r.fit {
		r.to(Change{To: Checking})
		r.timeWait()
		return
	}
	r.join()
}

// onStandby acts on one check's result: in Checking, a fit standby joins
// the queue; in Waiting, an unfit one leaves it, as a --locktimeout's
// give-up does (its node is deleted by the recipe), and then closes its
// session too, so that a node whose deletion failed goes with it: a node
// left queued while nobody watches it would take the lock and hold it for
// nobody. Once the lock is held, results no longer matter: a failure
// found as the lock came does not undo it.
func (r *run) onStandby(res StandbyResult) {
	if res.Round != r.rounds {
		return
	}
	if res.Err != nil {
		r.standbyErr = res.Err
	}
	switch r.state {
	case Checking:
		if res.Fit {
			r.fit = true
			r.join()
			return
		}
		if r.c.LockTimeout == 0 {
			// One look at the lock is one look at the check too.
			r.giveUp(fmt.Errorf("%w, and --no-blocking or -t 0: %w", ErrStandbyUnfit, res.Err))
		}
	case Waiting:
		if res.Fit || r.leaving || r.acquired == nil {
			return
		}
		r.fit, r.leaving = false, true
		r.unfit = fmt.Errorf("%w %d times in a row: %w", ErrStandbyUnfit, res.Failures, res.Err)
		r.leave(r.unfit)
	}
}

// leftQueue follows the end of an Acquire that this round cancelled for
// the standby's check: a new session (Connect closes this one, and any
// node of ours left in it), then the checks until one passes.
func (r *run) leftQueue() {
	r.leaving, r.queue, r.leave = false, nil, nil
	r.connected = make(chan error, 1)
	r.to(Change{To: Connecting, Round: r.rounds, Err: r.unfit})
	// Within the round's wait: --locktimeout and a stopping signal end
	// this connect as they end the wait for the lock.
	connected, ctx := r.connected, r.wait
	go func() { connected <- r.c.Locker.Connect(ctx) }()
}

// join queues for the lock: the recipe creates the node and waits, within
// the round's wait and a queue context of its own, which leaving the queue
// cancels.
func (r *run) join() {
	r.to(Change{To: Waiting})
	r.timeWait()
	r.queue, r.leave = context.WithCancelCause(r.wait)
	acq := make(chan acquired, 1)
	r.acquired = acq
	ctx, wait := r.queue, r.c.LockTimeout != 0
	go func() {
		lease, err := r.c.Locker.Acquire(ctx, wait)
		acq <- acquired{lease, err}
	}()
}
