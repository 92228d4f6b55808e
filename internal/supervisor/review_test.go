package supervisor

import (
	"errors"
	"strings"
	"syscall"
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

// TestReviewPanicInEveryChange (review): an observer that panics on any
// one change. Whatever was started under the lock is killed and gone
// before the lock is released; a lock never held is not released; a lock
// held with nothing started is released at once; after the final change,
// nothing more is done. The panic goes on.
func TestReviewPanicInEveryChange(t *testing.T) {
	type step struct {
		from, to State
		// drive starts the run and takes it to the change, which
		// panics; after says what Run does then.
		drive func(h *harness)
		after []string
	}
	connected := func(h *harness) {
		h.toWaiting()
	}
	for _, tc := range []step{
		{Starting, Connecting, func(h *harness) { h.run(); h.expect("starting→connecting") }, nil},
		{Connecting, Waiting, func(h *harness) {
			h.run()
			h.expect("starting→connecting", "connect")
			h.locker.connect <- nil
			h.expect("connecting→waiting")
		}, nil},
		{Waiting, Holding, func(h *harness) {
			connected(h)
			h.locker.acquire <- acquired{lease: h.lease}
			h.expect("waiting→holding")
		}, []string{"release"}},
		{Holding, Running, func(h *harness) { h.toRunning() }, []string{"kill all", "release"}},
		{Running, Holding, func(h *harness) {
			h.toRunning()
			h.proc.exit(0)
			h.expect("signal all terminated", "signal all continued", "timer 3s", "running→holding")
		}, []string{"kill all", "release"}},
		{Running, Lost, func(h *harness) {
			h.toRunning()
			h.lease.lose()
			h.expect("signal all terminated", "signal all continued", "timer 3s", "running→lost")
		}, []string{"kill all", "release"}},
		{Holding, Lost, func(h *harness) {
			h.lease.lose()
			connected(h)
			h.locker.acquire <- acquired{lease: h.lease}
			h.expect("waiting→holding", "holding→lost")
		}, []string{"release"}},
		{Holding, Released, func(h *harness) {
			h.toRunning()
			h.proc.exit(0)
			// Gone is closed already: nothing is signalled.
			h.expect("running→holding", "release", "holding→released")
		}, nil},
		{Waiting, GaveUp, func(h *harness) {
			connected(h)
			h.signals <- syscall.SIGTERM
			h.expect("waiting→gave_up")
		}, nil},
	} {
		t.Run(tc.from.String()+"→"+tc.to.String(), func(t *testing.T) {
			h := newHarness(t)
			h.obs.then = func(ch Change) {
				if ch.From == tc.from && ch.To == tc.to {
					panic("observer broke")
				}
			}
			if tc.to == Released {
				close(h.proc.gone) // before the workload exits: Gone at once
			}
			gone := false
			if tc.after != nil && tc.after[0] == "kill all" {
				// Gone closes only after the kill.
				h.proc.onKill = func() {
					if !gone {
						gone = true
						close(h.proc.gone)
					}
				}
			}
			tc.drive(h)
			h.expect(tc.after...)
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
		})
	}
}

// TestReviewSignalWhileStopping (review): a signal while what ran under
// the lock is being stopped (after a loss, or what the workload left) is
// neither passed on to anything nor a reason to release early: the
// release still waits for Gone, and the code is unchanged.
func TestReviewSignalWhileStopping(t *testing.T) {
	for _, lose := range []bool{true, false} {
		name := map[bool]string{true: "lost", false: "leftovers"}[lose]
		t.Run(name, func(t *testing.T) {
			h := newHarness(t)
			h.toRunning()
			want, to := 5, "running→holding"
			if lose {
				h.lease.lose()
				want, to = exitcode.LockLost, "running→lost"
			} else {
				h.proc.exit(5)
			}
			h.expect("signal all terminated", "signal all continued", "timer 3s", to)
			for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGWINCH, syscall.SIGTERM} {
				h.signals <- sig
			}
			h.clock.advance(grace)
			h.expect("kill all")
			h.done()
			close(h.proc.gone)
			h.expect("release", to[strings.Index(to, "→")+len("→"):]+"→released")
			if code := h.exitCode(); code != want {
				t.Errorf("exit code %d, want %d", code, want)
			}
		})
	}
}

// TestReviewAcquireLeaseAndError (review): a Locker that answers with a
// lease and an error (against its contract: an error leaves nothing in
// ZooKeeper). The run gives up with the error's code, and the lease it
// was handed is given back, not left to hold up the next contender until
// the session ends.
func TestReviewAcquireLeaseAndError(t *testing.T) {
	h := newHarness(t)
	h.toWaiting()
	h.locker.acquire <- acquired{lease: h.lease, err: exitcode.With(exitcode.Unavailable, errors.New("lost the answer"))}
	h.expect("release", "waiting→gave_up")
	if code := h.exitCode(); code != exitcode.Unavailable {
		t.Errorf("exit code %d, want %d", code, exitcode.Unavailable)
	}
}

// TestReviewGoneAsGraceEnds (review): everything is gone just as the grace
// runs out. Nothing is left to kill: no SIGKILL goes out after Gone (as
// PID 1 it would sweep whatever was reparented to lockex since, none of
// it started under the lock), and no warning says something outlived the
// grace.
func TestReviewGoneAsGraceEnds(t *testing.T) {
	for range ties {
		h := newHarness(t)
		h.obs.then = func(ch Change) {
			if ch.To == Lost {
				close(h.proc.gone)
				h.clock.advance(grace)
			}
		}
		h.toRunning()
		h.lease.lose()
		h.expect("signal all terminated", "signal all continued", "timer 3s", "running→lost", "release", "lost→released")
		if code := h.exitCode(); code != exitcode.LockLost {
			t.Fatalf("exit code %d, want %d", code, exitcode.LockLost)
		}
	}
}

// TestReviewContinuedAfterJobControl (review): Ctrl-Z stops the workload
// and lockex; fg continues lockex, which continues the workload only if
// its lease still vouches for the lock (its deadline, KillBy less the
// grace, has not passed). Else the workload stays stopped: the lease is
// about to be lost, and the stop that follows has what is left of the
// grace, or none. (e2e: TestReviewCtrlZPastTheSession.)
func TestReviewContinuedAfterJobControl(t *testing.T) {
	t.Run("within the lease", func(t *testing.T) {
		h := newHarness(t)
		h.toRunning()
		h.clock.advance(killByIn - grace - time.Millisecond)
		h.proc.cont <- struct{}{}
		h.expect("forward continued")
		h.exitsClean()
		h.exitCode()
	})
	t.Run("past the lease's deadline", func(t *testing.T) {
		h := newHarness(t)
		h.toRunning()
		h.clock.advance(killByIn + time.Second) // stopped for longer than the session may live
		h.proc.cont <- struct{}{}
		h.expect("timer 100ms")
		h.done() // not continued
		h.lease.lose()
		h.expect("stop timer 100ms", "kill all", "running→lost")
		close(h.proc.gone)
		h.expect("release", "lost→released")
		if code := h.exitCode(); code != exitcode.LockLost {
			t.Errorf("exit code %d, want %d", code, exitcode.LockLost)
		}
	})
	t.Run("past the deadline, then renewed", func(t *testing.T) {
		h := newHarness(t)
		h.toRunning()
		h.clock.advance(killByIn - grace)
		h.proc.cont <- struct{}{}
		h.expect("timer 100ms")
		h.clock.advance(100 * time.Millisecond)
		h.expect("timer 100ms") // still past it
		h.lease.killBy = h.clock.Now().Add(killByIn)
		h.clock.advance(100 * time.Millisecond)
		h.expect("forward continued")
		h.exitsClean()
		h.exitCode()
	})
}
