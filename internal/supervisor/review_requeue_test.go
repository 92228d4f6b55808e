package supervisor

import (
	"errors"
	"math"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lockex/lockex/internal/exitcode"
)

// Adversarial tests of --max-runtime and --requeue (review of issue 16,
// parts 3 and 4).

// untilReturn collects every step Run takes until it returns, and its
// code: for ties, where the order of the steps depends on select's pick.
func (h *harness) untilReturn() (steps []string, code int) {
	h.t.Helper()
	deadline := time.After(5 * time.Second) // a bound for a hung test, not a timing
	for {
		select {
		case s := <-h.steps:
			steps = append(steps, s)
		case code = <-h.code:
			for {
				select {
				case s := <-h.steps:
					steps = append(steps, s)
				default:
					return steps, code
				}
			}
		case p := <-h.panic:
			h.t.Fatalf("Run panicked: %v; steps %q", p, steps)
		case <-deadline:
			h.t.Fatalf("Run did not return within 5s; steps %q", steps)
		}
	}
}

// TestReviewRequeueInterruptedWhileStopping (review): Ctrl-C at the
// terminal while lockex stops the workload (at --max-runtime, or after a
// loss) reaches the workload, which still has the foreground, and ends
// it. design.md §4.5: a workload ended by SIGINT while it had the
// foreground ends the loop after its round. No round may follow.
func TestReviewRequeueInterruptedWhileStopping(t *testing.T) {
	for _, tc := range []struct {
		name  string
		drive func(h *harness)
		from  string
		code  int
	}{
		{"max-runtime", func(h *harness) {
			h.toRunningLimited()
			h.clock.advance(maxRuntimeOf)
			h.expect("signal all terminated", "signal all continued", "timer 3s", "running→stopping")
		}, "stopping", exitcode.MaxRuntime},
		{"loss", func(h *harness) {
			h.toRunning()
			h.lease.lose()
			h.expect("signal all terminated", "signal all continued", "timer 3s", "running→lost")
		}, "lost", exitcode.LockLost},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := requeueing(t)
			tc.drive(h)
			// Slow to act on the kill signal, the workload is ended by
			// the user's Ctrl-C.
			h.proc.interrupted = syscall.SIGINT
			h.proc.exit(130)
			close(h.proc.gone)
			h.expect("stop timer 3s", "release", tc.from+"→released")
			if code := h.exitCode(); code != tc.code {
				t.Errorf("exit code %d, want %d", code, tc.code)
			}
		})
	}
}

// TestReviewRequeueTimeoutAsLockCameReleaseFails (review): --locktimeout
// passes just as the lock comes; the lock is given back, but its node
// could not be deleted (the connection dropped). design.md §4.5: a round
// that could not delete its node closes its session as it ends, so the
// node goes at once rather than holding the lock, with no workload,
// through the backoff.
func TestReviewRequeueTimeoutAsLockCameReleaseFails(t *testing.T) {
	h := requeueing(t)
	h.cfg.LockTimeout = 2 * time.Second
	h.lease.releaseErr = errors.New("connection lost")
	h.locker.onCancel = h.lease
	h.run()
	h.expect("starting→connecting", "connect")
	h.locker.connect <- nil
	h.expect("connecting→waiting", "timer 2s", "acquire wait=true")
	h.clock.advance(2 * time.Second)
	h.expect("release", "waiting→gave_up", "close", "timer 1s", "gave_up→backoff")
	if ch := h.obs.last(); !ch.SessionClosed {
		t.Errorf("backoff reported as %+v, want the session closed", ch)
	}
	h.signals <- syscall.SIGTERM
	h.expect("stop timer 1s", "backoff→gave_up")
	if code := h.exitCode(); code != 143 {
		t.Errorf("exit code %d, want 143", code)
	}
}

// TestReviewRequeueSignalAsBackoffEnds (review): a TERM and the end of
// the backoff found at once. Whatever select picks, lockex exits 143
// without waiting for, or taking, the lock again.
func TestReviewRequeueSignalAsBackoffEnds(t *testing.T) {
	for range ties {
		h := requeueing(t)
		h.obs.then = func(ch Change) {
			if ch.To == Backoff {
				h.signals <- syscall.SIGTERM
				h.clock.advance(ch.Backoff)
			}
		}
		h.toRunning()
		h.exits(0)
		steps, code := h.untilReturn()
		joined := strings.Join(steps, ", ")
		if code != 143 {
			t.Fatalf("exit code %d, want 143; steps %s", code, joined)
		}
		if strings.Contains(joined, "acquire") || strings.Contains(joined, "start") {
			t.Fatalf("went on to the lock after the TERM: %s", joined)
		}
		if !strings.HasSuffix(joined, "→gave_up") {
			t.Fatalf("steps %s, want the last round given up", joined)
		}
	}
}

// TestReviewRequeueMinHoldSignalRound2 (review): TERM during --min-hold
// of a later round ends the hold and the loop; lockex exits with that
// round's workload's code, not the signal's.
func TestReviewRequeueMinHoldSignalRound2(t *testing.T) {
	h := requeueing(t)
	h.cfg.MinHold = minHoldOf
	h.toRunning()
	h.proc.exit(3)
	h.expect("signal all terminated", "signal all continued", "timer 3s", "timer 10s", "running→holding")
	close(h.proc.gone)
	h.expect("stop timer 3s")
	h.clock.advance(minHoldOf)
	h.expect("release", "holding→released")
	h.backsOff("released", time.Second, 2)
	h.locker.connect <- nil
	h.expect("connecting→waiting", "acquire wait=true")
	h.locker.acquire <- acquired{lease: h.lease}
	h.expect("waiting→holding", "start LOCKEX_FENCING_TOKEN=42", "holding→running")
	h.proc.exit(5)
	h.expect("signal all terminated", "signal all continued", "timer 3s", "timer 10s", "running→holding")
	close(h.proc.gone)
	h.expect("stop timer 3s")
	h.signals <- syscall.SIGTERM
	h.expect("stop timer 10s", "release", "holding→released")
	if code := h.exitCode(); code != 5 {
		t.Errorf("exit code %d, want the workload's 5", code)
	}
}

// TestReviewRequeuePanicInRound2 (review): an observer that panics as the
// second round's workload starts. Round 2's workload is killed and gone
// before round 2's lock is given back; the panic goes on.
func TestReviewRequeuePanicInRound2(t *testing.T) {
	h := requeueing(t)
	running := 0
	h.obs.then = func(ch Change) {
		if ch.To == Running {
			running++
			if running == 2 {
				panic("observer broke")
			}
		}
	}
	h.toRunning()
	h.exits(0)
	h.backsOff("released", time.Second, 2)
	second := h.lease
	second.releaseErr = errors.New("round 2's lease")
	h.proc.onKill = func() { close(h.proc.gone) }
	h.locker.connect <- nil
	h.expect("connecting→waiting", "acquire wait=true")
	h.locker.acquire <- acquired{lease: h.lease}
	h.expect("waiting→holding", "start LOCKEX_FENCING_TOKEN=42", "holding→running", "kill all", "release")
	select {
	case p := <-h.panic:
		if p != "observer broke" {
			t.Errorf("panicked with %v", p)
		}
	case code := <-h.code:
		t.Fatalf("Run returned %d; the panic did not go on", code)
	case <-time.After(5 * time.Second):
		t.Fatal("the panic did not go on")
	}
	h.done()
}

// TestReviewRequeueBackoffBounds (review): every wait between rounds lies
// within --requeue-backoff and --requeue-backoff-max, also where doubling
// the wait would overflow a time.Duration (a cap near its limit, as
// --requeue-backoff-max 2562047h gives).
func TestReviewRequeueBackoffBounds(t *testing.T) {
	h := newHarness(t)
	first, most := time.Duration(1<<62), time.Duration(math.MaxInt64)
	h.cfg.Requeue = Requeue{On: true, Backoff: first, MaxBackoff: most}
	h.cfg.LockTimeout = 0
	busy := exitcode.With(exitcode.Busy, errors.New("taken"))
	h.run()
	h.expect("starting→connecting", "connect")
	for round := 2; round <= 4; round++ {
		h.locker.connect <- nil
		h.expect("connecting→waiting", "acquire wait=false")
		h.locker.acquire <- acquired{err: busy}
		h.expect("waiting→gave_up")
		step := <-h.steps // the backoff's timer
		h.expect("gave_up→backoff")
		d := h.obs.last().Backoff
		if d < first || d > most {
			t.Fatalf("round %d: backoff %s (%s), want within [%s, %s]", round, d, step, first, most)
		}
		h.clock.advance(d)
		h.expect("backoff→connecting", "connect")
	}
	h.signals <- syscall.SIGTERM
	h.expect("connecting→gave_up")
	if code := h.exitCode(); code != 143 {
		t.Errorf("exit code %d, want 143", code)
	}
}

// TestReviewRequeueSignalAsMaxRuntimePasses (review): a TERM and
// --max-runtime found at once. Whatever select picks, the workload is
// stopped, the round ends with 124 (the stop began before the workload
// exited), and no round follows.
func TestReviewRequeueSignalAsMaxRuntimePasses(t *testing.T) {
	for range ties {
		h := requeueing(t)
		h.obs.then = func(ch Change) {
			if ch.To == Running {
				h.signals <- syscall.SIGTERM
				h.clock.advance(maxRuntimeOf)
			}
			if ch.To == Stopping {
				close(h.proc.gone)
			}
		}
		h.proc.onKill = nil
		h.toRunningLimited()
		steps, code := h.untilReturn()
		joined := strings.Join(steps, ", ")
		if code != exitcode.MaxRuntime {
			t.Fatalf("exit code %d, want %d; steps %s", code, exitcode.MaxRuntime, joined)
		}
		if strings.Contains(joined, "backoff") || !strings.HasSuffix(joined, "stopping→released") {
			t.Fatalf("steps %s, want the round released after the stop, and the end", joined)
		}
	}
}

// TestReviewRequeueKillSignalINT (review): with --kill-signal INT, a
// workload on the terminal that lockex stops at --max-runtime dies of
// lockex's own SIGINT: that is no Ctrl-C, and the loop goes on.
func TestReviewRequeueKillSignalINT(t *testing.T) {
	h := requeueing(t)
	h.cfg.KillSignal = syscall.SIGINT
	h.toRunningLimited()
	h.clock.advance(maxRuntimeOf)
	h.expect("signal all interrupt", "signal all continued", "timer 3s", "running→stopping")
	h.proc.interrupted = syscall.SIGINT
	h.proc.exit(130)
	close(h.proc.gone)
	h.expect("stop timer 3s", "release", "stopping→released")
	h.backsOff("released", time.Second, 2)
	h.signals <- syscall.SIGTERM
	h.expect("connecting→gave_up")
	if code := h.exitCode(); code != 143 {
		t.Errorf("exit code %d, want 143", code)
	}
}
