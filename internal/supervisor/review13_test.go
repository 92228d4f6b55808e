package supervisor

import (
	"testing"
	"time"
)

// TestReview13LossAfterExitLeavingNothing (review of e03e27f): the
// workload exits leaving nothing, so Gone is closed at the stop's first
// look and nothing is signalled; the lease is lost in the same turn,
// before Run has seen Gone closed. The loss is acted on and reported
// first, the lock released only after, and the code stays the workload's:
// it ran to its end under the lock.
func TestReview13LossAfterExitLeavingNothing(t *testing.T) {
	for _, minHold := range []time.Duration{0, 2 * time.Second} {
		t.Run("min-hold "+minHold.String(), func(t *testing.T) {
			for range ties {
				h := newHarness(t)
				h.cfg.MinHold = minHold
				h.obs.then = func(ch Change) {
					if ch.From == Running && ch.To == Holding {
						h.lease.lose()
					}
				}
				h.toRunning()
				close(h.proc.gone)
				h.proc.exit(4)
				if minHold > 0 {
					h.expect("timer 2s", "running→holding", "stop timer 2s")
				} else {
					h.expect("running→holding")
				}
				h.expect("holding→lost", "release", "lost→released")
				if code := h.exitCode(); code != 4 {
					t.Fatalf("exit code %d, want the workload's 4", code)
				}
				if ch := h.obs.changes[len(h.obs.changes)-2]; ch.To != Lost || len(ch.Stopping) != 0 || ch.Late != 0 {
					t.Fatalf("loss reported as %+v, want nothing being stopped, not late", ch)
				}
			}
		})
	}
}
