package supervisor

import (
	"syscall"
	"testing"
	"time"

	"github.com/lockex/lockex/internal/exitcode"
)

// Review of the drain (issue 15): a stop the lock requires never waits on
// it, and a signal it held back never reaches the workload once a stop is
// under way.

// drainHarness is a running workload with a Drain whose channel the test
// closes; configure changes the Config before the run starts.
func drainHarness(t *testing.T, configure func(c *Config)) (*harness, chan struct{}) {
	h := newHarness(t)
	drained := make(chan struct{})
	h.cfg.Drain = func() <-chan struct{} {
		h.add("drain")
		return drained
	}
	if configure != nil {
		configure(&h.cfg)
	}
	h.toRunning()
	return h, drained
}

// TestReviewDrainLossAndDrainDoneAtOnce: the lease is lost just as the
// drain is done (both ready in the same turn): the loss wins, and the held
// TERM is never passed on: the stop's own signals go to everything.
func TestReviewDrainLossAndDrainDoneAtOnce(t *testing.T) {
	h, drained := drainHarness(t, nil)
	h.signals <- syscall.SIGTERM
	h.expect("drain")
	h.lease.lose()
	close(drained)
	h.expect("signal all terminated", "signal all continued", "timer 3s", "running→lost")
	close(h.proc.gone)
	h.expect("stop timer 3s", "release", "lost→released")
	if code := h.exitCode(); code != exitcode.LockLost {
		t.Errorf("exit code %d, want %d", code, exitcode.LockLost)
	}
}

// TestReviewDrainLossReadyWithDrainDone: made ready together inside Drain
// itself, so that Run's next turn finds both: the loss must go first.
func TestReviewDrainLossReadyWithDrainDone(t *testing.T) {
	for i := range 20 { // select picks at random among what is ready
		h := newHarness(t)
		h.cfg.Drain = func() <-chan struct{} {
			h.add("drain")
			h.lease.lose()
			done := make(chan struct{})
			close(done)
			return done
		}
		h.toRunning()
		h.signals <- syscall.SIGTERM
		h.expect("drain", "signal all terminated", "signal all continued", "timer 3s", "running→lost")
		close(h.proc.gone)
		h.expect("stop timer 3s", "release", "lost→released")
		if code := h.exitCode(); code != exitcode.LockLost {
			t.Fatalf("round %d: exit code %d, want %d", i, code, exitcode.LockLost)
		}
	}
}

// TestReviewDrainLossPastKillBy: lockex notices the loss during the drain
// only after KillBy (it was frozen): SIGKILL at once, no TERM passed on.
func TestReviewDrainLossPastKillBy(t *testing.T) {
	h, drained := drainHarness(t, nil)
	h.signals <- syscall.SIGTERM
	h.expect("drain")
	h.clock.advance(killByIn + time.Second)
	h.lease.lose()
	h.expect("kill all", "running→lost")
	if ch := h.obs.last(); ch.Late != time.Second {
		t.Errorf("lateness %s, want 1s", ch.Late)
	}
	close(drained)
	h.signals <- syscall.SIGTERM // asked again: nothing runs to pass it to
	close(h.proc.gone)
	h.expect("release", "lost→released")
	if code := h.exitCode(); code != exitcode.LockLost {
		t.Errorf("exit code %d, want %d", code, exitcode.LockLost)
	}
}

// TestReviewDrainOtherSignals: QUIT, HUP, USR2 and WINCH during the drain
// go on at once and neither end the drain nor start another; the held
// TERM goes once the drain is done, and only once.
func TestReviewDrainOtherSignals(t *testing.T) {
	h, drained := drainHarness(t, nil)
	h.signals <- syscall.SIGTERM
	h.expect("drain")
	for _, sig := range []syscall.Signal{syscall.SIGQUIT, syscall.SIGHUP, syscall.SIGUSR2, syscall.SIGWINCH} {
		h.signals <- sig
		h.expect("forward " + sig.String())
	}
	close(drained)
	h.expect("forward terminated")
	h.signals <- syscall.SIGINT // a drain is once per run
	h.expect("forward interrupt")
	h.exitsClean()
	h.exitCode()
}

// TestReviewDrainJobControl: lockex stopped and continued during the drain
// continues the workload as ever, and the held TERM still goes after; if
// it was stopped past the lease's deadline, the workload stays stopped,
// and the loss that follows stops it without the held TERM.
func TestReviewDrainJobControl(t *testing.T) {
	t.Run("continued in time", func(t *testing.T) {
		h, drained := drainHarness(t, nil)
		h.signals <- syscall.SIGTERM
		h.expect("drain")
		h.proc.cont <- struct{}{}
		h.expect("forward continued")
		close(drained)
		h.expect("forward terminated")
		h.exitsClean()
		h.exitCode()
	})
	t.Run("continued late", func(t *testing.T) {
		h, drained := drainHarness(t, nil)
		h.signals <- syscall.SIGTERM
		h.expect("drain")
		h.clock.advance(killByIn - grace)
		h.proc.cont <- struct{}{}
		h.expect("timer 100ms")
		h.lease.lose()
		// What is left before KillBy is the grace: the stop's own TERM
		// and SIGCONT, never the held one.
		h.expect("stop timer 100ms", "signal all terminated", "signal all continued", "timer 3s", "running→lost")
		close(drained)
		close(h.proc.gone)
		h.expect("stop timer 3s", "release", "lost→released")
		if code := h.exitCode(); code != exitcode.LockLost {
			t.Errorf("exit code %d, want %d", code, exitcode.LockLost)
		}
	})
}

// TestReviewDrainMinHold: the workload exits by itself during the drain
// under --min-hold: the held TERM is dropped (nothing to pass it to), the
// hold is kept as after any exit, and a second TERM ends it.
func TestReviewDrainMinHold(t *testing.T) {
	h, drained := drainHarness(t, func(c *Config) { c.MinHold = minHoldOf })
	h.signals <- syscall.SIGTERM
	h.expect("drain")
	h.proc.exit(0)
	h.expect("signal all terminated", "signal all continued", "timer 3s", "timer 10s", "running→holding")
	close(drained)
	close(h.proc.gone)
	h.expect("stop timer 3s")
	h.signals <- syscall.SIGTERM
	h.expect("stop timer 10s", "release", "holding→released")
	if code := h.exitCode(); code != 0 {
		t.Errorf("exit code %d, want the workload's 0", code)
	}
}
