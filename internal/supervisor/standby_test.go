package supervisor

import (
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/lockex/lockex/internal/exitcode"
)

// fakeStandby records each change of what Run asks to be checked as a
// step, "check N" (0: no checks), and delivers the results the test sends.
type fakeStandby struct {
	tr      *trace
	last    int
	results chan StandbyResult
}

func (s *fakeStandby) Check(round int) {
	if round != s.last {
		s.last = round
		s.tr.add("check %d", round)
	}
}

func (s *fakeStandby) Results() <-chan StandbyResult { return s.results }

// withStandby returns a harness whose run has a standby check.
func withStandby(t *testing.T) (*harness, *fakeStandby) {
	h := newHarness(t)
	sb := &fakeStandby{tr: h.trace, results: make(chan StandbyResult)}
	h.cfg.Standby = sb
	return h, sb
}

var errNotFit = errors.New("exec test -f /ready: exit 1")

// toChecking starts a run and drives it to Checking: connected, the check
// asked for, nothing queued.
func (h *harness) toChecking() {
	h.t.Helper()
	h.run()
	h.expect("starting→connecting", "connect")
	h.locker.connect <- nil
	h.expect("check 1", "connecting→checking")
}

// TestStandbyQueuesOncePassed: a standby that fails its check does not
// queue; the first pass queues it; once it holds the lock the check stops.
func TestStandbyQueuesOncePassed(t *testing.T) {
	h, sb := withStandby(t)
	h.toChecking()
	for i := 1; i <= 5; i++ {
		sb.results <- StandbyResult{Round: 1, Failures: i, Err: errNotFit}
	}
	h.done() // no Acquire: no node
	sb.results <- StandbyResult{Round: 1, Fit: true}
	h.expect("checking→waiting", "acquire wait=true")
	h.locker.acquire <- acquired{lease: h.lease}
	h.expect("check 0", "waiting→holding", "start LOCKEX_FENCING_TOKEN=42", "holding→running")
	h.exitsClean()
	if code := h.exitCode(); code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
}

// TestStandbyLeavesAndRejoins: a queued standby whose check fails its
// threshold leaves the queue as a --locktimeout's give-up does (the
// Acquire is cancelled, which deletes its node), replaces its session,
// checks again, and queues again once it passes, within the same
// --locktimeout, which is not started over.
func TestStandbyLeavesAndRejoins(t *testing.T) {
	h, sb := withStandby(t)
	h.cfg.LockTimeout = time.Minute
	h.run()
	h.expect("starting→connecting", "connect")
	h.locker.connect <- nil
	h.expect("check 1", "connecting→checking", "timer 1m0s")
	sb.results <- StandbyResult{Round: 1, Fit: true}
	h.expect("checking→waiting", "acquire wait=true")
	sb.results <- StandbyResult{Round: 1, Fit: true, Failures: 1, Err: errNotFit} // not yet the threshold
	h.done()
	sb.results <- StandbyResult{Round: 1, Failures: 3, Err: errNotFit}
	h.expect("check 0", "waiting→connecting", "connect")
	if ch := h.obs.last(); !errors.Is(ch.Err, ErrStandbyUnfit) || !errors.Is(ch.Err, errNotFit) || ch.Round != 1 {
		t.Errorf("leaving reported as %+v, want the standby's failure, round 1", ch)
	}
	h.locker.connect <- nil
	h.expect("check 1", "connecting→checking")
	sb.results <- StandbyResult{Round: 1, Fit: true}
	h.expect("checking→waiting", "acquire wait=true")
	h.locker.acquire <- acquired{lease: h.lease}
	h.expect("stop timer 1m0s", "check 0", "waiting→holding", "start LOCKEX_FENCING_TOKEN=42", "holding→running")
	h.exitsClean()
	if code := h.exitCode(); code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
}

// TestStandbyLockComesAsItLeaves: the lock granted just as the standby
// leaves the queue is held, not given back: a failure racing the
// acquisition does not undo it.
func TestStandbyLockComesAsItLeaves(t *testing.T) {
	h, sb := withStandby(t)
	h.locker.onCancel = h.lease
	h.toChecking()
	sb.results <- StandbyResult{Round: 1, Fit: true}
	h.expect("checking→waiting", "acquire wait=true")
	sb.results <- StandbyResult{Round: 1, Failures: 3, Err: errNotFit}
	h.expect("check 0", "waiting→holding", "start LOCKEX_FENCING_TOKEN=42", "holding→running")
	h.exitsClean()
	if code := h.exitCode(); code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
}

// TestStandbyLockTimeout: --locktimeout counts the checks: a standby that
// never passes gives up with the busy code, having queued nothing; so
// does one whose timeout passes while it replaces its session after
// leaving the queue.
func TestStandbyLockTimeout(t *testing.T) {
	t.Run("checking", func(t *testing.T) {
		h, sb := withStandby(t)
		h.cfg.LockTimeout = 5 * time.Second
		h.run()
		h.expect("starting→connecting", "connect")
		h.locker.connect <- nil
		h.expect("check 1", "connecting→checking", "timer 5s")
		sb.results <- StandbyResult{Round: 1, Failures: 1, Err: errNotFit}
		h.clock.advance(5 * time.Second)
		h.expect("check 0", "checking→gave_up")
		if code := h.exitCode(); code != busyCode {
			t.Errorf("exit code %d, want the busy code %d", code, busyCode)
		}
		if ch := h.obs.last(); !errors.Is(ch.Err, ErrLockTimeout) || !errors.Is(ch.Err, errNotFit) {
			t.Errorf("gave up as %+v, want the lock timeout and the check's failure", ch)
		}
	})
	t.Run("reconnecting", func(t *testing.T) {
		h, sb := withStandby(t)
		h.cfg.LockTimeout = 5 * time.Second
		h.run()
		h.expect("starting→connecting", "connect")
		h.locker.connect <- nil
		h.expect("check 1", "connecting→checking", "timer 5s")
		sb.results <- StandbyResult{Round: 1, Fit: true}
		h.expect("checking→waiting", "acquire wait=true")
		sb.results <- StandbyResult{Round: 1, Failures: 1, Err: errNotFit}
		h.expect("check 0", "waiting→connecting", "connect")
		h.clock.advance(5 * time.Second) // the connect hangs: the timeout ends it
		h.expect("connecting→gave_up")
		if code := h.exitCode(); code != busyCode {
			t.Errorf("exit code %d, want the busy code %d", code, busyCode)
		}
	})
	t.Run("one look", func(t *testing.T) {
		h, sb := withStandby(t)
		h.cfg.LockTimeout = 0
		h.toChecking()
		sb.results <- StandbyResult{Round: 1, Failures: 1, Err: errNotFit}
		h.expect("check 0", "checking→gave_up")
		if code := h.exitCode(); code != busyCode {
			t.Errorf("exit code %d, want the busy code %d", code, busyCode)
		}
		if ch := h.obs.last(); !errors.Is(ch.Err, ErrStandbyUnfit) {
			t.Errorf("gave up as %+v, want the standby's failure", ch)
		}
	})
}

// TestStandbySignals: a stopping signal while checking ends the run at
// once, 128+N, nothing queued; one while queued ends the Acquire, which
// deletes the node, as without a check.
func TestStandbySignals(t *testing.T) {
	t.Run("checking", func(t *testing.T) {
		h, _ := withStandby(t)
		h.toChecking()
		h.signals <- syscall.SIGTERM
		h.expect("check 0", "checking→gave_up")
		if code := h.exitCode(); code != exitcode.Signal(syscall.SIGTERM) {
			t.Errorf("exit code %d, want %d", code, exitcode.Signal(syscall.SIGTERM))
		}
	})
	t.Run("queued", func(t *testing.T) {
		h, sb := withStandby(t)
		h.toChecking()
		sb.results <- StandbyResult{Round: 1, Fit: true}
		h.expect("checking→waiting", "acquire wait=true")
		h.signals <- syscall.SIGINT
		h.expect("check 0", "waiting→gave_up")
		if code := h.exitCode(); code != exitcode.Signal(syscall.SIGINT) {
			t.Errorf("exit code %d, want %d", code, exitcode.Signal(syscall.SIGINT))
		}
	})
	t.Run("replacing its session", func(t *testing.T) {
		// Left the queue, connecting anew: the signal ends the connect,
		// and the run.
		h, sb := withStandby(t)
		h.toChecking()
		sb.results <- StandbyResult{Round: 1, Fit: true}
		h.expect("checking→waiting", "acquire wait=true")
		sb.results <- StandbyResult{Round: 1, Failures: 2, Err: errNotFit}
		h.expect("check 0", "waiting→connecting", "connect")
		h.signals <- syscall.SIGTERM
		h.expect("connecting→gave_up")
		if code := h.exitCode(); code != exitcode.Signal(syscall.SIGTERM) {
			t.Errorf("exit code %d, want %d", code, exitcode.Signal(syscall.SIGTERM))
		}
	})
}

// TestStandbyEachRound: with --requeue each round checks afresh before it
// queues; a result of an earlier round is dropped.
func TestStandbyEachRound(t *testing.T) {
	h, sb := withStandby(t)
	h.cfg.Requeue = Requeue{On: true, Backoff: time.Second, MaxBackoff: 4 * time.Second}
	h.toChecking()
	sb.results <- StandbyResult{Round: 1, Fit: true}
	h.expect("checking→waiting", "acquire wait=true")
	h.locker.acquire <- acquired{lease: h.lease}
	h.expect("check 0", "waiting→holding", "start LOCKEX_FENCING_TOKEN=42", "holding→running")
	h.exitsClean()
	h.backsOff("released", time.Second, 2)
	h.locker.connect <- nil
	h.expect("check 2", "connecting→checking")
	sb.results <- StandbyResult{Round: 1, Fit: true} // late, of round 1
	h.done()
	sb.results <- StandbyResult{Round: 2, Fit: true}
	h.expect("checking→waiting", "acquire wait=true")
	h.signals <- syscall.SIGTERM
	h.expect("check 0", "waiting→gave_up")
	if code := h.exitCode(); code != exitcode.Signal(syscall.SIGTERM) {
		t.Errorf("exit code %d, want %d", code, exitcode.Signal(syscall.SIGTERM))
	}
}
