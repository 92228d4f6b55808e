package supervisor

import (
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/lockex/lockex/internal/exitcode"
)

var errCheck = errors.New("GET http://127.0.0.1:8080/health: 503 Service Unavailable")

// failing is the checker's verdict on the fake workload.
var failing = HealthFailure{Pid: 1234, Failures: 3, Err: errCheck}

// TestUnhealthy: a failed health check stops the workload exactly as a
// loss does (kill signal and SIGCONT, grace timer) before it is reported;
// the lock is released only once all of it is gone; the code is 77.
func TestUnhealthy(t *testing.T) {
	h := newHarness(t)
	h.toRunning()
	h.health <- failing
	h.expect("signal all terminated", "signal all continued", "timer 3s", "running→stopping")
	ch := h.obs.last()
	if !errors.Is(ch.Err, ErrUnhealthy) || !errors.Is(ch.Err, errCheck) || ch.Pid != 1234 || len(ch.Stopping) != 1 {
		t.Errorf("reported as %+v, want the check's failure, the pid and what was signalled", ch)
	}
	if want := "workload failed its health check 3 times in a row: " + errCheck.Error(); ch.Err.Error() != want {
		t.Errorf("err %q, want %q", ch.Err, want)
	}
	h.done() // nothing is released while something may still run
	close(h.proc.gone)
	h.expect("stop timer 3s", "release", "stopping→released")
	if code := h.exitCode(); code != exitcode.Unhealthy {
		t.Errorf("exit code %d, want %d", code, exitcode.Unhealthy)
	}
	if ch := h.obs.last(); ch.Code != exitcode.Unhealthy {
		t.Errorf("final change %+v, want code %d", ch, exitcode.Unhealthy)
	}
}

// TestUnhealthyGraceEnds: a workload that ignores the kill signal gets
// SIGKILL when the grace is over, and a grace that KillBy cuts short is
// cut short here too: the same stop as a loss's.
func TestUnhealthyGraceEnds(t *testing.T) {
	t.Run("grace", func(t *testing.T) {
		h := newHarness(t)
		h.toRunning()
		h.health <- failing
		h.expect("signal all terminated", "signal all continued", "timer 3s", "running→stopping")
		h.clock.advance(grace)
		h.expect("kill all")
		close(h.proc.gone)
		h.expect("release", "stopping→released")
		h.exitCode()
	})
	t.Run("KillBy", func(t *testing.T) {
		h := newHarness(t)
		h.toRunning()
		h.clock.advance(killByIn - time.Second)
		h.health <- failing
		h.expect("signal all terminated", "signal all continued", "timer 1s", "running→stopping")
		close(h.proc.gone)
		h.expect("stop timer 1s", "release", "stopping→released")
		h.exitCode()
	})
}

// TestUnhealthyStale: a verdict on another workload than the running one
// changes nothing.
func TestUnhealthyStale(t *testing.T) {
	h := newHarness(t)
	h.toRunning()
	h.health <- HealthFailure{Pid: 999, Failures: 3, Err: errCheck}
	h.signals <- syscall.SIGWINCH // a step to know the verdict was read
	h.expect("forward window changed")
	h.exitsClean()
	if code := h.exitCode(); code != 0 {
		t.Errorf("exit code %d, want the workload's 0", code)
	}
}

// TestUnhealthyAfterExit: the workload exits on its own as its check
// fails: its exit, and its code, go first; the verdict then finds no
// running workload.
func TestUnhealthyAfterExit(t *testing.T) {
	h := newHarness(t)
	h.obs.then = func(ch Change) {
		if ch.To == Running {
			h.health <- failing
			h.proc.exit(5)
		}
	}
	h.toRunning()
	h.expect("signal all terminated", "signal all continued", "timer 3s", "running→holding")
	close(h.proc.gone)
	h.expect("stop timer 3s", "release", "holding→released")
	if code := h.exitCode(); code != 5 {
		t.Errorf("exit code %d, want the workload's 5", code)
	}
}

// TestUnhealthyRacesLoss: a loss found with a failed check goes first and
// is what the run reports and exits with.
func TestUnhealthyRacesLoss(t *testing.T) {
	h := newHarness(t)
	h.obs.then = func(ch Change) {
		if ch.To == Running {
			h.health <- failing
			h.lease.lose()
		}
	}
	h.toRunning()
	h.expect("signal all terminated", "signal all continued", "timer 3s", "running→lost")
	close(h.proc.gone)
	h.expect("stop timer 3s", "release", "lost→released")
	if code := h.exitCode(); code != exitcode.LockLost {
		t.Errorf("exit code %d, want %d", code, exitcode.LockLost)
	}
}

// TestLossWhileUnhealthy: a loss while the unhealthy workload is being
// stopped is reported, and the code is 76: the workload may have run past
// it. Noticed past KillBy, what is left is killed at once.
func TestLossWhileUnhealthy(t *testing.T) {
	t.Run("in time", func(t *testing.T) {
		h := newHarness(t)
		h.toRunning()
		h.health <- failing
		h.expect("signal all terminated", "signal all continued", "timer 3s", "running→stopping")
		h.lease.lose()
		h.expect("stopping→lost")
		close(h.proc.gone)
		h.expect("stop timer 3s", "release", "lost→released")
		if code := h.exitCode(); code != exitcode.LockLost {
			t.Errorf("exit code %d, want %d", code, exitcode.LockLost)
		}
	})
	t.Run("late", func(t *testing.T) {
		h := newHarness(t)
		h.toRunning()
		h.clock.advance(killByIn - 2*time.Second)
		h.health <- failing
		h.expect("signal all terminated", "signal all continued", "timer 2s", "running→stopping")
		h.clock.advance(time.Second)
		h.clock.mu.Lock()
		h.clock.now = h.clock.now.Add(2 * time.Second) // frozen past KillBy, the grace timer not yet seen
		h.clock.mu.Unlock()
		h.lease.lose()
		h.expect("kill all", "stopping→lost")
		if ch := h.obs.last(); ch.Late != time.Second {
			t.Errorf("lateness %s, want 1s", ch.Late)
		}
		close(h.proc.gone)
		h.expect("stop timer 2s", "release", "lost→released")
		if code := h.exitCode(); code != exitcode.LockLost {
			t.Errorf("exit code %d, want %d", code, exitcode.LockLost)
		}
	})
}

// TestUnhealthyMinHold: the lock is kept for --min-hold after an
// unhealthy workload's stop, as after its exit; a signal ends the hold;
// the code stays 77.
func TestUnhealthyMinHold(t *testing.T) {
	for _, bySignal := range []bool{false, true} {
		h := newHarness(t)
		h.cfg.MinHold = minHoldOf
		h.toRunning()
		h.clock.advance(time.Second)
		h.health <- failing
		h.expect("signal all terminated", "signal all continued", "timer 3s", "timer 9s", "running→stopping")
		if ch := h.obs.last(); ch.MinHold != 9*time.Second {
			t.Errorf("min hold %s, want 9s", ch.MinHold)
		}
		close(h.proc.gone)
		h.expect("stop timer 3s")
		h.done()
		if bySignal {
			h.signals <- syscall.SIGTERM
			h.expect("stop timer 9s", "release", "stopping→released")
		} else {
			h.clock.advance(9 * time.Second)
			h.expect("release", "stopping→released")
		}
		if code := h.exitCode(); code != exitcode.Unhealthy {
			t.Errorf("signal %v: exit code %d, want %d", bySignal, code, exitcode.Unhealthy)
		}
	}
}
