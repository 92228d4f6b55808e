package supervisor

import (
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/lockex/lockex/internal/exitcode"
)

// requeueing returns a harness with --requeue: backoff 1s, doubling up to
// 4s.
func requeueing(t *testing.T) *harness {
	h := newHarness(t)
	h.cfg.Requeue = Requeue{On: true, Backoff: time.Second, MaxBackoff: 4 * time.Second}
	return h
}

// nextRound gives the harness a new lease and workload for the next round.
func (h *harness) nextRound() {
	h.lease = &fakeLease{tr: h.trace, lost: make(chan struct{}), err: errors.New("session expired"), killBy: h.clock.Now().Add(killByIn)}
	h.proc = &fakeProcess{tr: h.trace, exited: make(chan struct{}), gone: make(chan struct{}), cont: make(chan struct{}, 1)}
}

// lastTo is the last change reported to state, whatever followed it.
func (o *observer) lastTo(state State) Change {
	o.mu.Lock()
	defer o.mu.Unlock()
	for i := len(o.changes) - 1; i >= 0; i-- {
		if o.changes[i].To == state {
			return o.changes[i]
		}
	}
	return Change{}
}

// backsOff expects the backoff that follows a round, and moves the clock
// to its end: the next round connects.
func (h *harness) backsOff(from string, d time.Duration, round int) {
	h.t.Helper()
	h.expect("timer "+d.String(), from+"→backoff")
	if ch := h.obs.last(); ch.Backoff != d || ch.Round != round {
		h.t.Fatalf("backoff reported as %+v, want %s before round %d", ch, d, round)
	}
	h.clock.advance(d - time.Millisecond)
	h.done()
	h.nextRound()
	h.clock.advance(time.Millisecond)
	h.expect("backoff→connecting", "connect")
	if ch := h.obs.last(); ch.Round != round {
		h.t.Fatalf("round reported as %+v, want %d", ch, round)
	}
}

// runsAgain takes a connecting round to Running.
func (h *harness) runsAgain() {
	h.t.Helper()
	h.locker.connect <- nil
	h.expect("connecting→waiting", "acquire wait=true")
	h.locker.acquire <- acquired{lease: h.lease}
	h.expect("waiting→holding", "start LOCKEX_FENCING_TOKEN=42", "holding→running")
}

// exits ends the running workload with code, all of it gone at once.
func (h *harness) exits(code int) {
	h.t.Helper()
	h.proc.exit(code)
	h.expect("signal all terminated", "signal all continued", "timer 3s", "running→holding")
	close(h.proc.gone)
	h.expect("stop timer 3s", "release", "holding→released")
	if ch := h.obs.lastTo(Released); ch.Code != code {
		h.t.Fatalf("round ended as %+v, want code %d", ch, code)
	}
}

// TestRequeueRounds: a workload that ends, whatever its code, is run
// again in a new round with a session of its own, after a backoff that
// doubles while rounds are short, is capped, and starts again after a
// round that ran long. A TERM while the workload runs is passed on and
// ends the loop with the workload's code.
func TestRequeueRounds(t *testing.T) {
	h := requeueing(t)
	h.toRunning()
	h.exits(0)
	h.backsOff("released", time.Second, 2)
	if ch := h.obs.lastTo(Backoff); ch.SessionClosed {
		t.Errorf("backoff reported as %+v, want the session kept after a clean round", ch)
	}
	h.runsAgain()
	h.exits(3)
	h.backsOff("released", 2*time.Second, 3)
	h.runsAgain()
	h.exits(0)
	h.backsOff("released", 4*time.Second, 4)
	h.runsAgain()
	h.exits(1)
	h.backsOff("released", 4*time.Second, 5) // capped
	h.runsAgain()
	h.clock.advance(4 * time.Second) // long enough: it ran well
	h.exits(1)
	h.backsOff("released", time.Second, 6)
	h.runsAgain()
	for _, sig := range []syscall.Signal{syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGWINCH} {
		h.signals <- sig // the workload's business: the loop goes on
		h.expect("forward " + sig.String())
	}
	h.exits(129)
	h.backsOff("released", 2*time.Second, 7)
	h.runsAgain()
	h.signals <- syscall.SIGTERM
	h.expect("forward terminated")
	h.proc.exit(143)
	h.expect("signal all terminated", "signal all continued", "timer 3s", "running→holding")
	close(h.proc.gone)
	h.expect("stop timer 3s", "release", "holding→released")
	if code := h.exitCode(); code != 143 {
		t.Errorf("exit code %d, want the workload's 143", code)
	}
}

// TestRequeueStopBetweenRounds: a stopping signal during the backoff ends
// it at once (128+N, nothing held); SIGWINCH does not.
func TestRequeueStopBetweenRounds(t *testing.T) {
	h := requeueing(t)
	h.toRunning()
	h.exits(0)
	h.expect("timer 1s", "released→backoff")
	h.signals <- syscall.SIGWINCH
	h.signals <- syscall.SIGINT
	h.expect("stop timer 1s", "backoff→gave_up")
	var stop StoppedBy
	if ch := h.obs.last(); !errors.As(ch.Err, &stop) || stop.Signal != syscall.SIGINT {
		t.Errorf("ended as %+v, want stopped by SIGINT", ch)
	}
	if code := h.exitCode(); code != 130 {
		t.Errorf("exit code %d, want 130", code)
	}
}

// TestRequeueStopWhileWaiting: a signal while a later round waits for the
// lock ends the loop as it ends a wait without --requeue.
func TestRequeueStopWhileWaiting(t *testing.T) {
	h := requeueing(t)
	h.toRunning()
	h.exits(0)
	h.backsOff("released", time.Second, 2)
	h.locker.connect <- nil
	h.expect("connecting→waiting", "acquire wait=true")
	h.signals <- syscall.SIGUSR1
	h.expect("waiting→gave_up")
	if code := h.exitCode(); code != 128+int(syscall.SIGUSR1) {
		t.Errorf("exit code %d, want %d", code, 128+int(syscall.SIGUSR1))
	}
}

// TestRequeueAfterLoss: a round that lost the lock ends with its session
// closed (its node, should it still exist, goes with it) before the
// backoff is reported; the next round makes a new session.
func TestRequeueAfterLoss(t *testing.T) {
	h := requeueing(t)
	h.toRunning()
	h.lease.lose()
	h.expect("signal all terminated", "signal all continued", "timer 3s", "running→lost")
	close(h.proc.gone)
	h.expect("stop timer 3s", "release", "lost→released", "close")
	if ch := h.obs.lastTo(Released); ch.Code != exitcode.LockLost {
		t.Errorf("round ended as %+v, want 76", ch)
	}
	h.backsOff("released", time.Second, 2)
	if ch := h.obs.lastTo(Backoff); !ch.SessionClosed {
		t.Errorf("backoff reported as %+v, want the session closed", ch)
	}
	h.runsAgain()
	h.signals <- syscall.SIGQUIT
	h.expect("forward quit")
	h.exits(131)
	if code := h.exitCode(); code != 131 {
		t.Errorf("exit code %d, want 131", code)
	}
}

// TestRequeueSignalWhileStopping: a TERM during the stop after a loss is
// not passed on, does not hurry the release, and ends the loop after it
// (76).
func TestRequeueSignalWhileStopping(t *testing.T) {
	h := requeueing(t)
	h.toRunning()
	h.lease.lose()
	h.expect("signal all terminated", "signal all continued", "timer 3s", "running→lost")
	h.signals <- syscall.SIGTERM
	h.clock.advance(grace)
	h.expect("kill all")
	close(h.proc.gone)
	h.expect("release", "lost→released")
	if code := h.exitCode(); code != exitcode.LockLost {
		t.Errorf("exit code %d, want %d", code, exitcode.LockLost)
	}
}

// TestRequeueBusy: with one look per round (--no-blocking, -t 0) or
// --locktimeout, a round that does not get the lock backs off (keeping its
// session) and looks again.
func TestRequeueBusy(t *testing.T) {
	busy := exitcode.With(exitcode.Busy, errors.New("taken"))
	t.Run("one look", func(t *testing.T) {
		h := requeueing(t)
		h.cfg.LockTimeout = 0
		h.run()
		h.expect("starting→connecting", "connect")
		for round, backoff := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 4 * time.Second} {
			h.locker.connect <- nil
			h.expect("connecting→waiting", "acquire wait=false")
			h.locker.acquire <- acquired{err: busy}
			h.expect("waiting→gave_up")
			if ch := h.obs.lastTo(GaveUp); ch.Code != busyCode {
				t.Fatalf("round ended as %+v, want the busy code", ch)
			}
			h.backsOff("gave_up", backoff, round+2)
		}
		h.locker.connect <- nil
		h.expect("connecting→waiting", "acquire wait=false")
		h.locker.acquire <- acquired{lease: h.lease}
		h.expect("waiting→holding", "start LOCKEX_FENCING_TOKEN=42", "holding→running")
		h.signals <- syscall.SIGTERM
		h.expect("forward terminated")
		h.exits(143)
		if code := h.exitCode(); code != 143 {
			t.Errorf("exit code %d, want 143", code)
		}
	})
	t.Run("locktimeout", func(t *testing.T) {
		h := requeueing(t)
		h.cfg.LockTimeout = 2 * time.Second
		h.run()
		h.expect("starting→connecting", "connect")
		h.locker.connect <- nil
		h.expect("connecting→waiting", "timer 2s", "acquire wait=true")
		h.clock.advance(2 * time.Second)
		h.expect("waiting→gave_up")
		if err := h.obs.lastTo(GaveUp).Err; !errors.Is(err, ErrLockTimeout) {
			t.Fatalf("gave up with %v, want the lock timeout", err)
		}
		h.backsOff("gave_up", time.Second, 2)
		h.locker.connect <- nil
		h.expect("connecting→waiting", "timer 2s", "acquire wait=true")
		h.clock.advance(2 * time.Second)
		h.expect("waiting→gave_up", "timer 2s", "gave_up→backoff")
		h.signals <- syscall.SIGTERM // not the last round's lock timeout: 143, not busy
		h.expect("stop timer 2s", "backoff→gave_up")
		if code := h.exitCode(); code != 143 {
			t.Errorf("exit code %d, want 143", code)
		}
	})
	t.Run("locktimeout, then the lock", func(t *testing.T) {
		h := requeueing(t)
		h.cfg.LockTimeout = 2 * time.Second
		h.run()
		h.expect("starting→connecting", "connect")
		h.locker.connect <- nil
		h.expect("connecting→waiting", "timer 2s", "acquire wait=true")
		h.clock.advance(2 * time.Second)
		h.expect("waiting→gave_up")
		h.backsOff("gave_up", time.Second, 2)
		h.locker.connect <- nil
		h.expect("connecting→waiting", "timer 2s", "acquire wait=true")
		h.locker.acquire <- acquired{lease: h.lease}
		h.expect("stop timer 2s", "waiting→holding", "start LOCKEX_FENCING_TOKEN=42", "holding→running")
		h.signals <- syscall.SIGINT
		h.expect("forward interrupt")
		h.exits(130)
		if code := h.exitCode(); code != 130 {
			t.Errorf("exit code %d, want 130", code)
		}
	})
}

// TestRequeueZooKeeper: the first session must come (69 at once, as
// without --requeue); once lockex has had one, a round that cannot reach
// ZooKeeper closes what is left of its session and backs off. A
// configuration ZooKeeper refuses (64) ends the loop.
func TestRequeueZooKeeper(t *testing.T) {
	unavailable := exitcode.With(exitcode.Unavailable, errors.New("zookeeper unreachable"))
	t.Run("first session", func(t *testing.T) {
		h := requeueing(t)
		h.run()
		h.expect("starting→connecting", "connect")
		h.locker.connect <- unavailable
		h.expect("connecting→gave_up")
		if code := h.exitCode(); code != exitcode.Unavailable {
			t.Errorf("exit code %d, want %d", code, exitcode.Unavailable)
		}
	})
	t.Run("outage between rounds", func(t *testing.T) {
		h := requeueing(t)
		h.toRunning()
		h.exits(0)
		h.backsOff("released", time.Second, 2)
		h.locker.connect <- unavailable
		h.expect("connecting→gave_up", "close")
		h.backsOff("gave_up", 2*time.Second, 3)
		h.locker.connect <- nil
		h.expect("connecting→waiting", "acquire wait=true")
		h.locker.acquire <- acquired{err: unavailable}
		h.expect("waiting→gave_up", "close")
		h.backsOff("gave_up", 4*time.Second, 4)
		h.runsAgain()
		h.signals <- syscall.SIGTERM
		h.expect("forward terminated")
		h.exits(0)
		if code := h.exitCode(); code != 0 {
			t.Errorf("exit code %d, want 0", code)
		}
	})
	t.Run("refused configuration", func(t *testing.T) {
		h := requeueing(t)
		h.toWaiting()
		h.locker.acquire <- acquired{err: exitcode.With(exitcode.Usage, errors.New("a semaphore of size 3"))}
		h.expect("waiting→gave_up")
		if code := h.exitCode(); code != exitcode.Usage {
			t.Errorf("exit code %d, want %d", code, exitcode.Usage)
		}
	})
}

// TestRequeueMaxRuntime: a round stopped at --max-runtime is followed by
// another; the limit is the round's.
func TestRequeueMaxRuntime(t *testing.T) {
	h := requeueing(t)
	h.toRunningLimited()
	h.clock.advance(maxRuntimeOf)
	h.expect("signal all terminated", "signal all continued", "timer 3s", "running→stopping")
	close(h.proc.gone)
	h.expect("stop timer 3s", "release", "stopping→released")
	if ch := h.obs.lastTo(Released); ch.Code != exitcode.MaxRuntime {
		t.Errorf("round ended as %+v, want 124", ch)
	}
	// It ran for 5s, longer than the 4s cap: the backoff starts over.
	h.backsOff("released", time.Second, 2)
	h.locker.connect <- nil
	h.expect("connecting→waiting", "acquire wait=true")
	h.locker.acquire <- acquired{lease: h.lease}
	h.expect("waiting→holding", "start LOCKEX_FENCING_TOKEN=42", "timer 5s", "holding→running")
	h.signals <- syscall.SIGTERM
	h.expect("forward terminated")
	h.proc.exit(143)
	h.expect("stop timer 5s", "signal all terminated", "signal all continued", "timer 3s", "running→holding")
	close(h.proc.gone)
	h.expect("stop timer 3s", "release", "holding→released")
	if code := h.exitCode(); code != 143 {
		t.Errorf("exit code %d, want 143", code)
	}
}

// TestRequeueStartFails: a workload that cannot start (126, 127) is a
// round like any other.
func TestRequeueStartFails(t *testing.T) {
	h := requeueing(t)
	h.startErr = exitcode.With(exitcode.NotFound, errors.New("no such command"))
	h.toWaiting()
	h.locker.acquire <- acquired{lease: h.lease}
	h.expect("waiting→holding", "start LOCKEX_FENCING_TOKEN=42", "release", "holding→released", "timer 1s", "released→backoff")
	h.signals <- syscall.SIGTERM
	h.expect("stop timer 1s", "backoff→gave_up")
	if code := h.exitCode(); code != 143 {
		t.Errorf("exit code %d, want 143", code)
	}
}

// TestPanicInNewChanges: an observer that panics on a change this file's
// features added. What runs under the lock is killed and gone before the
// lock is released; between rounds nothing is held, and nothing more is
// done. The panic goes on.
func TestPanicInNewChanges(t *testing.T) {
	for _, tc := range []struct {
		name  string
		on    State
		drive func(h *harness)
		after []string
	}{
		{"running→stopping", Stopping, func(h *harness) {
			h.toRunningLimited()
			h.clock.advance(maxRuntimeOf)
			h.expect("signal all terminated", "signal all continued", "timer 3s", "running→stopping")
		}, []string{"kill all", "release"}},
		{"released→backoff", Backoff, func(h *harness) {
			h.cfg.Requeue = Requeue{On: true, Backoff: time.Second, MaxBackoff: time.Second}
			h.toRunning()
			h.proc.exit(0)
			h.expect("signal all terminated", "signal all continued", "timer 3s", "running→holding")
			h.proc.onKill = nil
			close(h.proc.gone)
			h.expect("stop timer 3s", "release", "holding→released", "timer 1s", "released→backoff")
		}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.obs.then = func(ch Change) {
				if ch.To == tc.on {
					panic("observer broke")
				}
			}
			h.proc.onKill = func() { close(h.proc.gone) }
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

// TestRequeueInterruptedOnTerminal: Ctrl-C (or Ctrl-\) at a terminal
// reaches the workload in the foreground, not lockex: a workload ended so
// ends the loop, as a shell's loop ends. A workload ended by a SIGINT
// from elsewhere is a round like any other.
func TestRequeueInterruptedOnTerminal(t *testing.T) {
	h := requeueing(t)
	h.toRunning()
	h.exits(130) // killed by a SIGINT not typed at lockex's terminal
	h.backsOff("released", time.Second, 2)
	h.runsAgain()
	h.proc.interrupted = syscall.SIGINT
	h.exits(130)
	if code := h.exitCode(); code != 130 {
		t.Errorf("exit code %d, want the workload's 130", code)
	}
}
