package supervisor

import (
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/lockex/lockex/internal/exitcode"
)

const maxRuntimeOf = 5 * time.Second

// toRunningLimited drives a run with --max-runtime to Running: the limit's
// timer starts with the workload, before the start is reported.
func (h *harness) toRunningLimited() {
	h.t.Helper()
	h.cfg.MaxRuntime = maxRuntimeOf
	h.toWaiting()
	h.locker.acquire <- acquired{lease: h.lease}
	h.expect("waiting→holding", "start LOCKEX_FENCING_TOKEN=42", "timer 5s", "holding→running")
}

// TestMaxRuntime: at the limit, everything under the lock is stopped as for
// a loss (kill signal, SIGCONT, grace) before the change is reported; the
// lock waits for all of it to be gone; the code is 124 whatever the
// workload exits with once told to stop.
func TestMaxRuntime(t *testing.T) {
	h := newHarness(t)
	h.toRunningLimited()
	h.clock.advance(maxRuntimeOf - time.Millisecond)
	h.done()
	h.clock.advance(time.Millisecond)
	h.expect("signal all terminated", "signal all continued", "timer 3s", "running→stopping")
	ch := h.obs.last()
	if !errors.Is(ch.Err, ErrMaxRuntime) || len(ch.Stopping) != 1 || ch.MinHold != 0 {
		t.Errorf("stop reported as %+v, want ErrMaxRuntime and what was signalled", ch)
	}
	h.proc.exit(0) // it handled SIGTERM and exited cleanly: still cut short
	h.done()
	close(h.proc.gone)
	h.expect("stop timer 3s", "release", "stopping→released")
	if code := h.exitCode(); code != exitcode.MaxRuntime {
		t.Errorf("exit code %d, want %d", code, exitcode.MaxRuntime)
	}
	if ch := h.obs.last(); ch.Code != exitcode.MaxRuntime {
		t.Errorf("final change %+v, want code %d", ch, exitcode.MaxRuntime)
	}
}

// TestMaxRuntimeIgnoredTERM: a workload that ignores the kill signal gets
// SIGKILL once the grace is over; the lock waits for it.
func TestMaxRuntimeIgnoredTERM(t *testing.T) {
	h := newHarness(t)
	h.toRunningLimited()
	h.clock.advance(maxRuntimeOf)
	h.expect("signal all terminated", "signal all continued", "timer 3s", "running→stopping")
	h.clock.advance(grace)
	h.expect("kill all")
	h.done()
	close(h.proc.gone)
	h.expect("release", "stopping→released")
	if code := h.exitCode(); code != exitcode.MaxRuntime {
		t.Errorf("exit code %d, want %d", code, exitcode.MaxRuntime)
	}
}

// TestMaxRuntimeNotReached: a workload that ends in time keeps its code,
// and the limit's timer goes with it.
func TestMaxRuntimeNotReached(t *testing.T) {
	h := newHarness(t)
	h.toRunningLimited()
	h.clock.advance(maxRuntimeOf - time.Millisecond)
	h.proc.exit(3)
	h.expect("stop timer 5s", "signal all terminated", "signal all continued", "timer 3s", "running→holding")
	h.clock.advance(time.Second) // past the limit: nothing happens
	h.done()
	close(h.proc.gone)
	h.expect("stop timer 3s", "release", "holding→released")
	if code := h.exitCode(); code != 3 {
		t.Errorf("exit code %d, want the workload's 3", code)
	}
}

// TestMaxRuntimeAndExitAtOnce: the workload exits and the limit passes
// before Run looks again. The workload ended by itself before lockex acted
// on the limit: its own code, every time, whatever select picks.
func TestMaxRuntimeAndExitAtOnce(t *testing.T) {
	for range ties {
		h := newHarness(t)
		h.obs.then = func(ch Change) {
			if ch.To == Running {
				h.proc.exit(0)
				h.clock.advance(maxRuntimeOf)
			}
		}
		h.toRunningLimited()
		h.expect("signal all terminated", "signal all continued", "timer 3s", "running→holding")
		close(h.proc.gone)
		h.expect("stop timer 3s", "release", "holding→released")
		if code := h.exitCode(); code != 0 {
			t.Fatalf("exit code %d, want the workload's 0", code)
		}
	}
}

// TestMaxRuntimeAndLossAtOnce: the lease is lost and the limit passes
// before Run looks again: the loss goes first (76), every time.
func TestMaxRuntimeAndLossAtOnce(t *testing.T) {
	for range ties {
		h := newHarness(t)
		h.obs.then = func(ch Change) {
			if ch.To == Running {
				h.clock.advance(maxRuntimeOf)
				h.lease.lose()
			}
		}
		h.toRunningLimited()
		h.expect("signal all terminated", "signal all continued", "timer 3s", "running→lost")
		close(h.proc.gone)
		h.expect("stop timer 3s", "release", "lost→released")
		if code := h.exitCode(); code != exitcode.LockLost {
			t.Fatalf("exit code %d, want %d", code, exitcode.LockLost)
		}
	}
}

// TestMaxRuntimeThenLoss: a loss while the stop is under way is a loss:
// what is being stopped may run past the lock (76). Noticed past KillBy,
// what is left gets SIGKILL at once.
func TestMaxRuntimeThenLoss(t *testing.T) {
	t.Run("in time", func(t *testing.T) {
		h := newHarness(t)
		h.toRunningLimited()
		h.clock.advance(maxRuntimeOf)
		h.expect("signal all terminated", "signal all continued", "timer 3s", "running→stopping")
		h.lease.lose()
		h.expect("stopping→lost")
		if ch := h.obs.last(); ch.Late != 0 || len(ch.Stopping) != 0 {
			t.Errorf("loss reported as %+v, want nothing more signalled", ch)
		}
		h.done()
		close(h.proc.gone)
		h.expect("stop timer 3s", "release", "lost→released")
		if code := h.exitCode(); code != exitcode.LockLost {
			t.Errorf("exit code %d, want %d", code, exitcode.LockLost)
		}
	})
	t.Run("past KillBy", func(t *testing.T) {
		h := newHarness(t)
		h.toRunningLimited()
		h.clock.advance(maxRuntimeOf)
		h.expect("signal all terminated", "signal all continued", "timer 3s", "running→stopping")
		h.lease.killBy = h.clock.Now().Add(-time.Millisecond) // lockex was frozen: the grace has not run out, KillBy has
		h.lease.lose()
		h.expect("kill all", "stopping→lost")
		if ch := h.obs.last(); ch.Late != time.Millisecond {
			t.Errorf("loss reported as %+v, want 1ms late", ch)
		}
		close(h.proc.gone)
		h.expect("stop timer 3s", "release", "lost→released")
		if code := h.exitCode(); code != exitcode.LockLost {
			t.Errorf("exit code %d, want %d", code, exitcode.LockLost)
		}
	})
}

// TestMaxRuntimeSignalWhileStopping: a signal during the stop is neither
// passed on nor a reason to release early; the code stays 124.
func TestMaxRuntimeSignalWhileStopping(t *testing.T) {
	h := newHarness(t)
	h.toRunningLimited()
	h.clock.advance(maxRuntimeOf)
	h.expect("signal all terminated", "signal all continued", "timer 3s", "running→stopping")
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGWINCH, syscall.SIGINT} {
		h.signals <- sig
	}
	h.clock.advance(grace)
	h.expect("kill all")
	h.done()
	close(h.proc.gone)
	h.expect("release", "stopping→released")
	if code := h.exitCode(); code != exitcode.MaxRuntime {
		t.Errorf("exit code %d, want %d", code, exitcode.MaxRuntime)
	}
}

// TestMaxRuntimeWithMinHold: a limit shorter than --min-hold stops the
// workload, and the lock is still kept for what is left of --min-hold; a
// signal ends that early, a loss is reported; the code stays 124.
func TestMaxRuntimeWithMinHold(t *testing.T) {
	start := func(t *testing.T) *harness {
		h := newHarness(t)
		h.cfg.MinHold = minHoldOf
		h.toRunningLimited()
		h.clock.advance(maxRuntimeOf)
		h.expect("signal all terminated", "signal all continued", "timer 3s", "timer 5s", "running→stopping")
		if ch := h.obs.last(); ch.MinHold != minHoldOf-maxRuntimeOf {
			t.Errorf("reported min-hold remaining %s, want 5s", ch.MinHold)
		}
		close(h.proc.gone)
		h.expect("stop timer 3s")
		return h
	}
	t.Run("kept", func(t *testing.T) {
		h := start(t)
		h.clock.advance(minHoldOf - maxRuntimeOf - time.Millisecond)
		h.done()
		h.clock.advance(time.Millisecond)
		h.expect("release", "stopping→released")
		if code := h.exitCode(); code != exitcode.MaxRuntime {
			t.Errorf("exit code %d, want %d", code, exitcode.MaxRuntime)
		}
	})
	t.Run("signal", func(t *testing.T) {
		h := start(t)
		h.signals <- syscall.SIGTERM
		h.expect("stop timer 5s", "release", "stopping→released")
		if code := h.exitCode(); code != exitcode.MaxRuntime {
			t.Errorf("exit code %d, want %d", code, exitcode.MaxRuntime)
		}
	})
	t.Run("loss", func(t *testing.T) {
		h := start(t)
		h.lease.lose()
		h.expect("stop timer 5s", "stopping→lost", "release", "lost→released")
		if code := h.exitCode(); code != exitcode.MaxRuntime {
			t.Errorf("exit code %d, want %d: all of it was stopped under the lock", code, exitcode.MaxRuntime)
		}
	})
}

// TestMaxRuntimePastKillBy: a limit reached when the lease's KillBy has
// passed (lockex was frozen) kills at once, without a grace.
func TestMaxRuntimePastKillBy(t *testing.T) {
	h := newHarness(t)
	h.lease.killBy = h.clock.now.Add(maxRuntimeOf - time.Second)
	h.toRunningLimited()
	h.clock.advance(maxRuntimeOf)
	h.expect("kill all", "running→stopping")
	close(h.proc.gone)
	h.expect("release", "stopping→released")
	if code := h.exitCode(); code != exitcode.MaxRuntime {
		t.Errorf("exit code %d, want %d", code, exitcode.MaxRuntime)
	}
}
