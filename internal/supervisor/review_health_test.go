package supervisor

import (
	"syscall"
	"testing"

	"github.com/lockex/lockex/internal/exitcode"
)

// TestReviewVerdictDuringMinHold (review): the workload exited on its own
// and the lock is kept for --min-hold; a verdict on it arriving now (the
// checker was mid-check as it exited) changes nothing: no second stop, no
// unhealthy, the code stays the workload's.
func TestReviewVerdictDuringMinHold(t *testing.T) {
	h := newHarness(t)
	h.cfg.MinHold = minHoldOf
	h.toRunning()
	h.proc.exit(5)
	h.expect("signal all terminated", "signal all continued", "timer 3s", "timer 10s", "running→holding")
	close(h.proc.gone)
	h.expect("stop timer 3s")
	h.health <- failing
	h.clock.advance(minHoldOf)
	h.expect("release", "holding→released")
	if code := h.exitCode(); code != 5 {
		t.Errorf("exit code %d, want the workload's 5", code)
	}
}

// TestReviewVerdictWhileLost (review): a verdict after a loss, while what
// ran is being stopped, changes nothing: the run is a loss (76), stopped
// once.
func TestReviewVerdictWhileLost(t *testing.T) {
	h := newHarness(t)
	h.toRunning()
	h.lease.lose()
	h.expect("signal all terminated", "signal all continued", "timer 3s", "running→lost")
	h.health <- failing
	h.health <- failing
	close(h.proc.gone)
	h.expect("stop timer 3s", "release", "lost→released")
	if code := h.exitCode(); code != exitcode.LockLost {
		t.Errorf("exit code %d, want %d", code, exitcode.LockLost)
	}
}

// TestReviewSecondVerdict (review): a second verdict on the unhealthy
// workload, while it is being stopped, neither signals it again nor
// restarts the grace.
func TestReviewSecondVerdict(t *testing.T) {
	h := newHarness(t)
	h.toRunning()
	h.health <- failing
	h.expect("signal all terminated", "signal all continued", "timer 3s", "running→stopping")
	h.health <- failing
	h.clock.advance(grace)
	h.expect("kill all")
	close(h.proc.gone)
	h.expect("release", "stopping→released")
	if code := h.exitCode(); code != exitcode.Unhealthy {
		t.Errorf("exit code %d, want %d", code, exitcode.Unhealthy)
	}
}

// TestReviewVerdictExitAndLossAtOnce (review): the verdict, the workload's
// exit and the loss all ready in one turn: the loss goes first, 76.
func TestReviewVerdictExitAndLossAtOnce(t *testing.T) {
	for range 20 { // select picks at random: several turns
		h := newHarness(t)
		h.obs.then = func(ch Change) {
			if ch.To == Running {
				h.health <- failing
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

// TestReviewVerdictThenSignal (review): a stopping signal while the
// unhealthy workload is being stopped does not release the lock before
// all of it is gone.
func TestReviewVerdictThenSignal(t *testing.T) {
	h := newHarness(t)
	h.cfg.MinHold = minHoldOf
	h.toRunning()
	h.health <- failing
	h.expect("signal all terminated", "signal all continued", "timer 3s", "timer 10s", "running→stopping")
	h.signals <- syscall.SIGTERM
	h.expect("stop timer 10s")
	h.done() // nothing released while the workload may run
	close(h.proc.gone)
	h.expect("stop timer 3s", "release", "stopping→released")
	if code := h.exitCode(); code != exitcode.Unhealthy {
		t.Errorf("exit code %d, want %d", code, exitcode.Unhealthy)
	}
}
