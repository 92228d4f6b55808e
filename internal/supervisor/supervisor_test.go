package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lockex/lockex/internal/exitcode"
)

// The fakes below record every call Run makes on them, and every change it
// reports, in one ordered list: a test reads it step by step, so that "act,
// then report" is an assertion on order, not on timing. A call the test
// did not expect fails it. Nothing here sleeps or waits on a timer: the
// clock moves only when the test moves it.

// trace is the ordered record of what Run did.
type trace struct {
	t     *testing.T
	steps chan string
}

func newTrace(t *testing.T) *trace { return &trace{t: t, steps: make(chan string, 100)} }

func (tr *trace) add(format string, args ...any) { tr.steps <- fmt.Sprintf(format, args...) }

// expect reads the next steps and fails the test unless they are want.
func (tr *trace) expect(want ...string) {
	tr.t.Helper()
	for _, w := range want {
		select {
		case got := <-tr.steps:
			if got != w {
				tr.t.Fatalf("next step %q, want %q", got, w)
			}
		case <-time.After(5 * time.Second): // a bound for a hung test, not a timing
			tr.t.Fatalf("no step within 5s, want %q", w)
		}
	}
}

// done fails the test if Run did anything more.
func (tr *trace) done() {
	tr.t.Helper()
	select {
	case got := <-tr.steps:
		tr.t.Fatalf("unexpected step %q after the last expected one", got)
	default:
	}
}

// fakeClock moves only when the test moves it.
type fakeClock struct {
	tr     *trace
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

type fakeTimer struct {
	clock   *fakeClock
	d       time.Duration
	at      time.Time
	c       chan time.Time
	stopped bool // stopped, or fired
}

func (t *fakeTimer) C() <-chan time.Time { return t.c }

// Stop of a timer that has neither fired nor been stopped is a step.
func (t *fakeTimer) Stop() {
	t.clock.mu.Lock()
	defer t.clock.mu.Unlock()
	if !t.stopped {
		t.stopped = true
		t.clock.tr.add("stop timer %s", t.d)
	}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) NewTimer(d time.Duration) Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{clock: c, d: d, at: c.now.Add(d), c: make(chan time.Time, 1)}
	c.timers = append(c.timers, t)
	c.tr.add("timer %s", d)
	return t
}

// advance moves the clock and fires the timers that are due.
func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	for _, t := range c.timers {
		if !t.stopped && !t.at.After(c.now) && len(t.c) == 0 {
			t.c <- c.now
			t.stopped = true
		}
	}
}

// fakeLocker answers Connect and Acquire with what the test sends.
type fakeLocker struct {
	tr      *trace
	connect chan error
	acquire chan acquired
	// onCancel, if set, is what Acquire returns when its context ends:
	// a lease taken just as the wait was given up.
	onCancel Lease
}

func (l *fakeLocker) Connect(ctx context.Context) error {
	l.tr.add("connect")
	select {
	case err := <-l.connect:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (l *fakeLocker) Acquire(ctx context.Context, wait bool) (Lease, error) {
	l.tr.add("acquire wait=%v", wait)
	select {
	case a := <-l.acquire:
		return a.lease, a.err
	case <-ctx.Done():
		if l.onCancel != nil {
			return l.onCancel, nil
		}
		return nil, ctx.Err()
	}
}

func (l *fakeLocker) Close() { l.tr.add("close") }

type fakeLease struct {
	tr         *trace
	lost       chan struct{}
	err        error
	killBy     time.Time
	releaseErr error
	onNode     func() // called as Run asks for the node's name
}

func (l *fakeLease) Path() string { return "/lockex/x" }
func (l *fakeLease) Node() string {
	if l.onNode != nil {
		l.onNode()
	}
	return "/lockex/x/n__lock__0000000000"
}
func (*fakeLease) Token() int64            { return 42 }
func (*fakeLease) Waited() time.Duration   { return time.Second }
func (l *fakeLease) Done() <-chan struct{} { return l.lost }
func (l *fakeLease) KillBy() time.Time     { return l.killBy }
func (l *fakeLease) Err() error {
	select {
	case <-l.lost:
		return l.err
	default:
		return nil
	}
}
func (l *fakeLease) Release() error {
	l.tr.add("release")
	return l.releaseErr
}

func (l *fakeLease) lose() { close(l.lost) }

type fakeProcess struct {
	tr     *trace
	exited chan struct{}
	code   int
	gone   chan struct{}
	cont   chan struct{}
	onKill func() // called by KillAll, after its step
	// killedNothing makes KillAll name nothing, as when a cgroup's kill
	// took everything before the look.
	killedNothing bool
	// interrupted is the key's signal that ended the workload on the
	// terminal, 0 for none.
	interrupted syscall.Signal
}

func (*fakeProcess) Pid() int                { return 1234 }
func (p *fakeProcess) Done() <-chan struct{} { return p.exited }
func (p *fakeProcess) ExitCode() int         { return p.code }
func (p *fakeProcess) Signal(s syscall.Signal) error {
	p.tr.add("forward %s", s)
	return nil
}
func (p *fakeProcess) SignalAll(s syscall.Signal) []string {
	p.tr.add("signal all %s", s)
	return []string{"process group 1234"}
}
func (p *fakeProcess) KillAll() []string {
	p.tr.add("kill all")
	if p.onKill != nil {
		p.onKill()
	}
	if p.killedNothing {
		return nil
	}
	return []string{"process group 1234"}
}
func (p *fakeProcess) Gone() <-chan struct{}      { return p.gone }
func (p *fakeProcess) Continued() <-chan struct{} { return p.cont }
func (p *fakeProcess) Interrupted() (syscall.Signal, bool) {
	return p.interrupted, p.interrupted != 0
}

func (p *fakeProcess) exit(code int) { p.code = code; close(p.exited) }

// observer records each change as "from→to".
type observer struct {
	tr      *trace
	mu      sync.Mutex
	changes []Change
	panicOn State
	// then, if set, runs in Run's goroutine once a change is reported:
	// what it makes ready, Run finds ready all at once in its next select.
	then func(Change)
}

func (o *observer) Changed(ch Change) {
	o.mu.Lock()
	o.changes = append(o.changes, ch)
	o.mu.Unlock()
	o.tr.add("%s→%s", ch.From, ch.To)
	if o.then != nil {
		o.then(ch)
	}
	if o.panicOn != Starting && ch.To == o.panicOn {
		panic("observer broke")
	}
}

func (o *observer) last() Change {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.changes[len(o.changes)-1]
}

// harness is one Run under test, with its fakes.
type harness struct {
	*trace
	clock    *fakeClock
	locker   *fakeLocker
	lease    *fakeLease
	proc     *fakeProcess
	obs      *observer
	signals  chan os.Signal
	health   chan HealthFailure
	cfg      Config
	startErr error
	code     chan int
	panic    chan any
}

const (
	grace     = 3 * time.Second
	killByIn  = 8 * time.Second // from the acquisition
	busyCode  = 9
	minHoldOf = 10 * time.Second
)

func newHarness(t *testing.T) *harness {
	tr := newTrace(t)
	h := &harness{
		trace:   tr,
		clock:   &fakeClock{tr: tr, now: time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC)},
		locker:  &fakeLocker{tr: tr, connect: make(chan error, 1), acquire: make(chan acquired, 1)},
		obs:     &observer{tr: tr},
		signals: make(chan os.Signal, 4),
		health:  make(chan HealthFailure, 4),
		code:    make(chan int, 1),
		panic:   make(chan any, 1),
	}
	h.lease = &fakeLease{tr: tr, lost: make(chan struct{}), err: errors.New("session expired"), killBy: h.clock.now.Add(killByIn)}
	h.proc = &fakeProcess{tr: tr, exited: make(chan struct{}), gone: make(chan struct{}), cont: make(chan struct{}, 1)}
	h.cfg = Config{
		Locker: h.locker,
		Start: func(env []string) (Process, error) {
			tr.add("start %s", strings.Join(slices.DeleteFunc(slices.Clone(env), func(e string) bool {
				return !strings.HasPrefix(e, "LOCKEX_FENCING_TOKEN=")
			}), " "))
			if h.startErr != nil {
				return nil, h.startErr
			}
			return h.proc, nil
		},
		Signals:      h.signals,
		Health:       h.health,
		LockTimeout:  -1,
		BusyExitCode: busyCode,
		KillSignal:   syscall.SIGTERM,
		KillGrace:    grace,
		Observer:     h.obs,
		Log:          slog.New(slog.DiscardHandler),
		Clock:        h.clock,
	}
	return h
}

func (h *harness) run() {
	go func() {
		defer func() {
			if p := recover(); p != nil {
				h.panic <- p
			}
		}()
		h.code <- Run(context.Background(), h.cfg)
	}()
}

// exitCode waits for Run's return and checks that it did nothing more.
func (h *harness) exitCode() int {
	h.t.Helper()
	select {
	case code := <-h.code:
		h.done()
		return code
	case p := <-h.panic:
		h.t.Fatalf("Run panicked: %v", p)
	case <-time.After(5 * time.Second):
		h.t.Fatal("Run did not return within 5s")
	}
	return 0
}

// toWaiting starts a run and drives it to Waiting: connected, Acquire
// called.
func (h *harness) toWaiting() {
	h.t.Helper()
	h.run()
	h.expect("starting→connecting", "connect")
	h.locker.connect <- nil
	h.expect("connecting→waiting", "acquire wait=true")
}

// exitsClean ends a running workload with code 0, leaving nothing: the
// stop of what it left, its grace cancelled, the release.
func (h *harness) exitsClean() {
	h.t.Helper()
	h.proc.exit(0)
	h.expect("signal all terminated", "signal all continued", "timer 3s", "running→holding")
	close(h.proc.gone)
	h.expect("stop timer 3s", "release", "holding→released")
}

// toRunning drives a run to Running: connected, lock acquired, started.
func (h *harness) toRunning() {
	h.t.Helper()
	h.toWaiting()
	h.locker.acquire <- acquired{lease: h.lease}
	h.expect("waiting→holding", "start LOCKEX_FENCING_TOKEN=42", "holding→running")
}

// TestNormalRun: the workload exits, what it left is stopped, and only
// then is the lock released; its code is lockex's.
func TestNormalRun(t *testing.T) {
	h := newHarness(t)
	h.toRunning()
	h.proc.exit(3)
	h.expect("signal all terminated", "signal all continued", "timer 3s", "running→holding")
	h.done() // nothing is released while something may still run
	close(h.proc.gone)
	h.expect("stop timer 3s", "release", "holding→released")
	if code := h.exitCode(); code != 3 {
		t.Errorf("exit code %d, want the workload's 3", code)
	}
	if ch := h.obs.last(); ch.Code != 3 {
		t.Errorf("final change %+v, want code 3", ch)
	}
}

// TestExitLeavingNothing: a workload that exited and left nothing behind
// is found gone by the stop's first look. Nothing is signalled, no grace
// is timed, and the lock goes back at once, after the exit was reported.
func TestExitLeavingNothing(t *testing.T) {
	h := newHarness(t)
	h.toRunning()
	close(h.proc.gone)
	h.proc.exit(5)
	h.expect("running→holding", "release", "holding→released")
	if code := h.exitCode(); code != 5 {
		t.Errorf("exit code %d, want the workload's 5", code)
	}
	if ch := h.obs.changes[len(h.obs.changes)-2]; ch.To != Holding || len(ch.Stopping) != 0 {
		t.Errorf("exit reported as %+v, want Holding with nothing being stopped", ch)
	}
}

// TestLossLeavingNothing: a loss found as everything under the lock is
// gone already signals nothing, reports the loss, then releases; still 76.
func TestLossLeavingNothing(t *testing.T) {
	h := newHarness(t)
	h.toRunning()
	close(h.proc.gone)
	h.lease.lose()
	h.expect("running→lost", "release", "lost→released")
	if code := h.exitCode(); code != exitcode.LockLost {
		t.Errorf("exit code %d, want %d", code, exitcode.LockLost)
	}
}

// TestLossWhileRunning: the stop starts before the loss is reported, the
// release waits for everything to be gone, and the code is 76.
func TestLossWhileRunning(t *testing.T) {
	h := newHarness(t)
	h.toRunning()
	h.lease.lose()
	h.expect("signal all terminated", "signal all continued", "timer 3s", "running→lost")
	ch := h.obs.last()
	if ch.Err == nil || ch.Late != 0 || len(ch.Stopping) != 1 {
		t.Errorf("loss reported as %+v, want its cause, no lateness and what was signalled", ch)
	}
	h.done()
	close(h.proc.gone)
	h.expect("stop timer 3s", "release", "lost→released")
	if code := h.exitCode(); code != exitcode.LockLost {
		t.Errorf("exit code %d, want %d", code, exitcode.LockLost)
	}
}

// TestGraceEndsWithSIGKILL: what ignores the kill signal gets SIGKILL when
// the grace is over, and the lock waits for it.
func TestGraceEndsWithSIGKILL(t *testing.T) {
	h := newHarness(t)
	h.toRunning()
	h.lease.lose()
	h.expect("signal all terminated", "signal all continued", "timer 3s", "running→lost")
	h.clock.advance(grace - time.Millisecond)
	h.done()
	h.clock.advance(time.Millisecond)
	h.expect("kill all")
	close(h.proc.gone)
	h.expect("release", "lost→released")
	h.exitCode()
}

// TestGraceEndsByKillBy: the grace is cut to what is left before KillBy,
// and a loss noticed after KillBy (lockex was frozen) kills at once.
func TestGraceEndsByKillBy(t *testing.T) {
	t.Run("short", func(t *testing.T) {
		h := newHarness(t)
		h.toRunning()
		h.clock.advance(killByIn - time.Second)
		h.lease.lose()
		h.expect("signal all terminated", "signal all continued", "timer 1s", "running→lost")
		close(h.proc.gone)
		h.expect("stop timer 1s", "release", "lost→released")
		h.exitCode()
	})
	for _, nothingNamed := range []bool{false, true} {
		// nothingNamed: the clean-clone run of make test found the
		// lateness unreported when the kill named nothing.
		t.Run(fmt.Sprintf("passed, kill names nothing: %v", nothingNamed), func(t *testing.T) {
			h := newHarness(t)
			h.proc.killedNothing = nothingNamed
			h.toRunning()
			h.clock.advance(killByIn + 250*time.Millisecond)
			h.lease.lose()
			h.expect("kill all", "running→lost")
			if ch := h.obs.last(); ch.Late != 250*time.Millisecond {
				t.Errorf("reported lateness %s, want 250ms", ch.Late)
			}
			close(h.proc.gone)
			h.expect("release", "lost→released")
			h.exitCode()
		})
	}
}

// TestLossBeforeStart: a lease lost as it was handed out is reported as a
// loss (the metrics count it), and the workload never starts.
func TestLossBeforeStart(t *testing.T) {
	h := newHarness(t)
	h.toWaiting()
	h.lease.lose()
	h.locker.acquire <- acquired{lease: h.lease}
	h.expect("waiting→holding", "holding→lost", "release", "lost→released")
	if code := h.exitCode(); code != exitcode.LockLost {
		t.Errorf("exit code %d, want %d", code, exitcode.LockLost)
	}
}

// TestGivingUp: every way of not getting the lock ends in GaveUp with its
// exit code, and nothing is started or left held.
func TestGivingUp(t *testing.T) {
	unavailable := exitcode.With(exitcode.Unavailable, errors.New("zookeeper unreachable"))
	busy := exitcode.With(exitcode.Busy, errors.New("taken"))
	for _, tc := range []struct {
		name        string
		lockTimeout time.Duration
		drive       func(h *harness)
		want        int
	}{
		{"unreachable", -1, func(h *harness) {
			h.expect("starting→connecting", "connect")
			h.locker.connect <- unavailable
			h.expect("connecting→gave_up")
		}, exitcode.Unavailable},
		{"signal while connecting", -1, func(h *harness) {
			h.expect("starting→connecting", "connect")
			h.signals <- syscall.SIGTERM
			h.expect("connecting→gave_up")
		}, 143},
		{"signal while waiting", -1, func(h *harness) {
			h.expect("starting→connecting", "connect")
			h.locker.connect <- nil
			h.expect("connecting→waiting", "acquire wait=true")
			h.signals <- syscall.SIGINT
			h.expect("waiting→gave_up")
		}, 130},
		{"locktimeout", 2 * time.Second, func(h *harness) {
			h.expect("starting→connecting", "connect")
			h.locker.connect <- nil
			h.expect("connecting→waiting", "timer 2s", "acquire wait=true")
			h.clock.advance(2 * time.Second)
			h.expect("waiting→gave_up")
			if err := h.obs.last().Err; !errors.Is(err, ErrLockTimeout) || !strings.Contains(err.Error(), "--locktimeout 2s passed") {
				h.t.Errorf("gave up with %v, want --locktimeout 2s passed", err)
			}
		}, busyCode},
		{"one look: taken", 0, func(h *harness) {
			h.expect("starting→connecting", "connect")
			h.locker.connect <- nil
			h.expect("connecting→waiting", "acquire wait=false")
			h.locker.acquire <- acquired{err: busy}
			h.expect("waiting→gave_up")
		}, busyCode},
		{"taken just as a signal came", -1, func(h *harness) {
			h.locker.onCancel = h.lease
			h.expect("starting→connecting", "connect")
			h.locker.connect <- nil
			h.expect("connecting→waiting", "acquire wait=true")
			h.signals <- syscall.SIGTERM
			h.expect("release", "waiting→gave_up")
		}, 143},
		{"SIGWINCH does not stop the wait", -1, func(h *harness) {
			h.expect("starting→connecting", "connect")
			h.signals <- syscall.SIGWINCH
			h.locker.connect <- nil
			h.expect("connecting→waiting", "acquire wait=true")
			h.signals <- syscall.SIGWINCH
			h.locker.acquire <- acquired{err: unavailable}
			h.expect("waiting→gave_up")
		}, exitcode.Unavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.cfg.LockTimeout = tc.lockTimeout
			h.run()
			tc.drive(h)
			if code := h.exitCode(); code != tc.want {
				t.Errorf("exit code %d, want %d", code, tc.want)
			}
		})
	}
}

// TestStopBeforeStart: told to stop just as the lock came, lockex gives it
// back without starting what would only be stopped again.
func TestStopBeforeStart(t *testing.T) {
	h := newHarness(t)
	h.lease.onNode = func() { h.signals <- syscall.SIGTERM; h.lease.onNode = nil }
	h.toWaiting()
	h.locker.acquire <- acquired{lease: h.lease}
	h.expect("waiting→holding", "release", "holding→released")
	if code := h.exitCode(); code != 143 {
		t.Errorf("exit code %d, want 143", code)
	}
}

// TestStartFails: a workload that cannot start releases the lock, with
// the exec error's code.
func TestStartFails(t *testing.T) {
	h := newHarness(t)
	h.startErr = exitcode.With(exitcode.NotFound, errors.New("no such command"))
	h.toWaiting()
	h.locker.acquire <- acquired{lease: h.lease}
	h.expect("waiting→holding", "start LOCKEX_FENCING_TOKEN=42", "release", "holding→released")
	if code := h.exitCode(); code != exitcode.NotFound {
		t.Errorf("exit code %d, want %d", code, exitcode.NotFound)
	}
}

// TestSignalsWhileRunning: every signal is passed on, SIGWINCH too, and
// none changes the state.
func TestSignalsWhileRunning(t *testing.T) {
	h := newHarness(t)
	h.toRunning()
	for _, sig := range []syscall.Signal{syscall.SIGUSR1, syscall.SIGWINCH, syscall.SIGTERM} {
		h.signals <- sig
		h.expect("forward " + sig.String())
	}
	h.proc.exit(143)
	h.expect("signal all terminated", "signal all continued", "timer 3s", "running→holding")
	close(h.proc.gone)
	h.expect("stop timer 3s", "release", "holding→released")
	if code := h.exitCode(); code != 143 {
		t.Errorf("exit code %d, want 143", code)
	}
}

// TestMinHold: the lock is kept for --min-hold after a quick workload;
// a signal or a loss ends that early.
func TestMinHold(t *testing.T) {
	start := func(t *testing.T) *harness {
		h := newHarness(t)
		h.cfg.MinHold = minHoldOf
		h.toRunning()
		h.clock.advance(time.Second)
		h.proc.exit(0)
		h.expect("signal all terminated", "signal all continued", "timer 3s", "timer 9s", "running→holding")
		if ch := h.obs.last(); ch.MinHold != 9*time.Second {
			t.Errorf("reported min-hold remaining %s, want 9s", ch.MinHold)
		}
		close(h.proc.gone)
		h.expect("stop timer 3s")
		return h
	}
	t.Run("kept", func(t *testing.T) {
		h := start(t)
		h.clock.advance(9*time.Second - time.Millisecond)
		h.done()
		h.clock.advance(time.Millisecond)
		h.expect("release", "holding→released")
		h.exitCode()
	})
	t.Run("signal", func(t *testing.T) {
		h := start(t)
		h.signals <- syscall.SIGWINCH
		h.signals <- syscall.SIGTERM
		h.expect("stop timer 9s", "release", "holding→released")
		if code := h.exitCode(); code != 0 {
			t.Errorf("exit code %d, want the workload's 0", code)
		}
	})
	t.Run("loss", func(t *testing.T) {
		h := start(t)
		h.lease.lose()
		h.expect("stop timer 9s", "holding→lost", "release", "lost→released")
		if code := h.exitCode(); code != 0 {
			t.Errorf("exit code %d, want the workload's 0: it ran to its end under the lock", code)
		}
	})
}

// TestReleaseFails: a node that could not be deleted is reported with the
// release; the session's end removes it.
func TestReleaseFails(t *testing.T) {
	h := newHarness(t)
	h.lease.releaseErr = errors.New("connection lost")
	h.toRunning()
	h.exitsClean()
	if ch := h.obs.last(); ch.ReleaseErr == nil {
		t.Errorf("final change %+v, want the release error", ch)
	}
	h.exitCode()
}

// TestPanicAfterStart: a panic while the workload runs (an observer's bug)
// kills all of it, waits, releases, and goes on as a panic.
func TestPanicAfterStart(t *testing.T) {
	h := newHarness(t)
	h.obs.panicOn = Running
	close(h.proc.gone)
	h.toWaiting()
	h.locker.acquire <- acquired{lease: h.lease}
	h.expect("waiting→holding", "start LOCKEX_FENCING_TOKEN=42", "holding→running", "kill all", "release")
	select {
	case p := <-h.panic:
		if p != "observer broke" {
			t.Errorf("panicked with %v", p)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the panic did not go on")
	}
	h.done()
}

func TestStateNames(t *testing.T) {
	for s := Starting; s < State(len(stateNames)); s++ {
		if strings.HasPrefix(s.String(), "state(") {
			t.Errorf("state %d has no name", s)
		}
	}
	if got := State(99).String(); got != "state(99)" {
		t.Errorf("State(99) = %q", got)
	}
}

// TestDrain: with a Drain, SIGTERM or SIGINT while the workload runs goes
// on only once the drain is done, or at once with a second one; other
// signals never wait; a loss or the workload's exit during the drain is
// acted on at once, and the held signal is then dropped.
func TestDrain(t *testing.T) {
	withDrain := func(t *testing.T) (*harness, chan struct{}) {
		h := newHarness(t)
		drained := make(chan struct{})
		h.cfg.Drain = func() <-chan struct{} { h.add("drain"); return drained }
		h.toRunning()
		return h, drained
	}
	t.Run("done", func(t *testing.T) {
		h, drained := withDrain(t)
		h.signals <- syscall.SIGTERM
		h.expect("drain")
		h.signals <- syscall.SIGUSR1
		h.expect("forward user defined signal 1")
		h.done()
		close(drained)
		h.expect("forward terminated")
		h.exitsClean()
		h.exitCode()
	})
	t.Run("asked twice", func(t *testing.T) {
		h, _ := withDrain(t)
		h.signals <- syscall.SIGINT
		h.expect("drain")
		h.signals <- syscall.SIGTERM
		h.expect("forward interrupt", "forward terminated")
		h.signals <- syscall.SIGTERM // no second drain
		h.expect("forward terminated")
		h.exitsClean()
		h.exitCode()
	})
	t.Run("lost meanwhile", func(t *testing.T) {
		h, drained := withDrain(t)
		h.signals <- syscall.SIGTERM
		h.expect("drain")
		h.lease.lose()
		h.expect("signal all terminated", "signal all continued", "timer 3s", "running→lost")
		close(drained)
		close(h.proc.gone)
		h.expect("stop timer 3s", "release", "lost→released")
		if code := h.exitCode(); code != exitcode.LockLost {
			t.Errorf("exit code %d, want %d", code, exitcode.LockLost)
		}
	})
	t.Run("exited meanwhile", func(t *testing.T) {
		h, drained := withDrain(t)
		h.signals <- syscall.SIGTERM
		h.expect("drain")
		h.exitsClean()
		close(drained)
		h.exitCode()
	})
}
