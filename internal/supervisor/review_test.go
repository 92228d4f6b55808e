package supervisor

import (
	"testing"
	"time"

	"github.com/lockex/lockex/internal/exitcode"
)

// The tests below make several events ready while Run is busy reporting a
// change, so that its next select finds them all ready at once. Go's
// select then picks one at random; each is run many times, so that an
// outcome that depends on the pick shows.
const ties = 50

// TestReviewExitAndLossAtOnce (review): the lease is lost and the
// workload exits before Run looks again. Which came first is not known,
// so the workload cannot be said to have run to its end under the lock:
// the run is a loss (76, reported as lost), every time, whatever select
// picks.
func TestReviewExitAndLossAtOnce(t *testing.T) {
	for range ties {
		h := newHarness(t)
		h.obs.then = func(ch Change) {
			if ch.To == Running {
				h.proc.exit(0)
				h.lease.lose()
			}
		}
		h.toRunning()
		h.expect("signal all terminated", "signal all continued", "timer 3s", "running→lost")
		close(h.proc.gone)
		h.expect("stop timer 3s", "release", "lost→released")
		if code := h.exitCode(); code != exitcode.LockLost {
			t.Fatalf("exit code %d, want %d", code, exitcode.LockLost)
		}
	}
}

// TestReviewLossAsLeftoversGo (review): the lease is lost as the last of
// what the workload left is gone, and as --min-hold ends. The lock was
// lost while held: that is reported as a loss (the lock-lost metric
// counts it) before the release, every time. The code stays the
// workload's: it exited under the lock.
func TestReviewLossAsLeftoversGo(t *testing.T) {
	for _, minHold := range []time.Duration{0, 2 * time.Second} {
		t.Run("min-hold "+minHold.String(), func(t *testing.T) {
			for range ties {
				h := newHarness(t)
				h.cfg.MinHold = minHold
				h.obs.then = func(ch Change) {
					if ch.From == Running && ch.To == Holding {
						close(h.proc.gone)
						h.clock.advance(minHold) // fires the hold timer, not the grace's
						h.lease.lose()
					}
				}
				h.toRunning()
				h.proc.exit(0)
				h.expect("signal all terminated", "signal all continued", "timer 3s")
				if minHold > 0 {
					h.expect("timer 2s")
				}
				h.expect("running→holding", "holding→lost", "stop timer 3s", "release", "lost→released")
				if code := h.exitCode(); code != 0 {
					t.Fatalf("exit code %d, want the workload's 0", code)
				}
			}
		})
	}
}
