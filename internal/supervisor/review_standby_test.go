package supervisor

import (
	"context"
	"errors"
	"testing"

	"github.com/lockex/lockex/internal/exitcode"
)

// busyAsCancelled is the locker whose one look (-t 0) found the lock
// taken just as its context ended: the recipe returns the look's answer,
// which it had before it saw the cancel.
type busyAsCancelled struct{ *fakeLocker }

var errTaken = exitcode.With(exitcode.Busy, errors.New("zklock: lock is held: /lockex/x has 1 contenders ahead"))

func (l busyAsCancelled) Acquire(ctx context.Context, wait bool) (Lease, error) {
	l.tr.add("acquire wait=%v", wait)
	<-ctx.Done()
	return nil, errTaken
}

// TestReviewStandbyOneLookBusyAsItLeaves: with -t 0 the standby looks
// once. A look that found the lock taken, answered as the standby's check
// failed and it left the queue, is that one look: the run gives up busy,
// and does not replace its session to check, and look, again.
func TestReviewStandbyOneLookBusyAsItLeaves(t *testing.T) {
	h, sb := withStandby(t)
	h.cfg.LockTimeout = 0
	h.cfg.Locker = busyAsCancelled{h.locker}
	h.toChecking()
	sb.results <- StandbyResult{Round: 1, Fit: true}
	h.expect("checking→waiting", "acquire wait=false")
	sb.results <- StandbyResult{Round: 1, Failures: 3, Err: errNotFit}
	h.expect("check 0", "waiting→gave_up")
	if code := h.exitCode(); code != busyCode {
		t.Errorf("exit code %d, want the busy code %d", code, busyCode)
	}
}
