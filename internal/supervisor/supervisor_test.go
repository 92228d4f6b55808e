package supervisor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lockex/lockex/internal/exitcode"
)

// calls records, in order, what Run did to the fakes that matter for
// safety: stopping the workload, releasing the lock, and what it reported.
type calls struct {
	t  *testing.T
	mu sync.Mutex
	// did is every recorded call; grace the grace of each stop.
	did   []string
	grace []time.Duration
	// released is set once the lease was released: nothing may be
	// stopped, signalled or started under it after that.
	released bool
}

func (c *calls) add(what string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.did = append(c.did, what)
}

func (c *calls) list() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.did)
}

// unexpected fails the test for a call that Run must not make.
func (c *calls) unexpected(format string, args ...any) {
	c.t.Helper()
	c.t.Errorf("unexpected call: "+format, args...)
}

// fakeLocker hands out a lease after wait, or fails with err; a cancelled
// context ends the wait as the real recipes do.
type fakeLocker struct {
	wait   time.Duration
	err    error
	loseAt time.Duration // after acquiring, 0 for never
	// killBy is the lease's KillBy, relative to the loss (or to the
	// acquisition if it is never lost); 0 for an hour.
	killBy time.Duration

	calls    *calls
	acquired bool
	released chan struct{}
}

func (l *fakeLocker) Connect(context.Context) error { return nil }

func (l *fakeLocker) Acquire(ctx context.Context) (Lease, error) {
	if l.acquired {
		l.calls.unexpected("Acquire after the lock was held")
	}
	select {
	case <-time.After(l.wait):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if l.err != nil {
		return nil, l.err
	}
	l.acquired = true
	lease := &fakeLease{calls: l.calls, released: l.released, lost: make(chan struct{})}
	killBy := l.killBy
	if killBy == 0 {
		killBy = time.Hour
	}
	lease.killBy = time.Now().Add(killBy)
	if l.loseAt > 0 {
		lease.killBy = time.Now().Add(l.loseAt + killBy)
		time.AfterFunc(l.loseAt, func() { close(lease.lost) })
	}
	return lease, nil
}

type fakeLease struct {
	calls          *calls
	released, lost chan struct{}
	killBy         time.Time
}

func (*fakeLease) Path() string            { return "/lockex/x" }
func (*fakeLease) Node() string            { return "/lockex/x/n__lock__0000000000" }
func (*fakeLease) Token() int64            { return 42 }
func (*fakeLease) Waited() time.Duration   { return 0 }
func (l *fakeLease) Done() <-chan struct{} { return l.lost }
func (l *fakeLease) KillBy() time.Time     { return l.killBy }
func (l *fakeLease) Err() error {
	select {
	case <-l.lost:
		return errors.New("session expired")
	default:
		return nil
	}
}
func (l *fakeLease) Release() error {
	l.calls.mu.Lock()
	twice := l.calls.released
	l.calls.released = true
	l.calls.mu.Unlock()
	if twice {
		l.calls.unexpected("Release of a released lease")
		return nil
	}
	l.calls.add("release")
	close(l.released)
	return nil
}

// fakeProcess exits with code when it receives a signal, or on its own
// after life.
type fakeProcess struct {
	calls   *calls
	done    chan struct{}
	code    int
	signals chan syscall.Signal // nil: no signal is expected
}

func (p *fakeProcess) Pid() int              { return 1234 }
func (p *fakeProcess) Done() <-chan struct{} { return p.done }
func (p *fakeProcess) ExitCode() int         { return p.code }
func (p *fakeProcess) Signal(s syscall.Signal) error {
	if p.signals == nil || p.calls.isReleased() {
		p.calls.unexpected("Signal(%s)", s)
		return nil
	}
	p.signals <- s
	return nil
}
func (p *fakeProcess) StartStop(sig syscall.Signal, grace time.Duration) <-chan struct{} {
	if p.calls.isReleased() {
		p.calls.unexpected("Stop after the release")
	}
	p.calls.mu.Lock()
	p.calls.grace = append(p.calls.grace, grace)
	p.calls.mu.Unlock()
	p.calls.add("stop " + sig.String())
	gone := make(chan struct{})
	close(gone)
	return gone
}

func (c *calls) isReleased() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.released
}

// fakeObserver records the changes Run reports; panicOn names one whose
// report panics, as a bug in the logs or metrics would.
type fakeObserver struct {
	calls   *calls
	panicOn string
}

func (o *fakeObserver) report(what string) {
	o.calls.add(what)
	if what == o.panicOn {
		panic("observer: " + what)
	}
}
func (o *fakeObserver) Acquired(string, int64, time.Duration) { o.report("acquired") }
func (o *fakeObserver) WorkloadStarted(int)                   { o.report("started") }
func (o *fakeObserver) WorkloadExited(int)                    { o.report("exited") }
func (o *fakeObserver) Lost(error)                            { o.report("lost") }
func (o *fakeObserver) Released()                             { o.report("released") }

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestRun(t *testing.T) {
	for _, tc := range []struct {
		name     string
		locker   fakeLocker
		signal   os.Signal // sent 50ms after Run starts
		timeout  time.Duration
		exit     int // the workload's code
		want     int
		started  bool
		released bool
	}{
		{name: "workload code passes through", exit: 3, want: 3, started: true, released: true},
		{name: "signal while waiting", locker: fakeLocker{wait: time.Hour}, signal: syscall.SIGTERM, want: 143},
		{name: "SIGWINCH does not stop the wait", locker: fakeLocker{wait: 200 * time.Millisecond}, signal: syscall.SIGWINCH, want: 0, started: true, released: true},
		{name: "locktimeout", locker: fakeLocker{wait: time.Hour}, timeout: 100 * time.Millisecond, want: 9},
		{name: "busy", locker: fakeLocker{err: exitcode.With(exitcode.Busy, errors.New("taken"))}, want: 9},
		{name: "unreachable", locker: fakeLocker{err: exitcode.With(exitcode.Unavailable, errors.New("down"))}, want: 69},
		{name: "signal forwarded while running", signal: syscall.SIGUSR1, exit: 138, want: 138, started: true, released: true},
		{name: "lock lost while running", locker: fakeLocker{loseAt: 50 * time.Millisecond}, exit: 0, want: 76, started: true, released: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := &calls{t: t}
			tc.locker.calls, tc.locker.released = rec, make(chan struct{})
			signals := make(chan os.Signal, 1)
			var env []string
			proc := &fakeProcess{calls: rec, done: make(chan struct{}), code: tc.exit}
			if tc.signal != nil {
				proc.signals = make(chan syscall.Signal, 1)
			}
			started := false
			go func() {
				if tc.signal != nil {
					time.Sleep(50 * time.Millisecond)
					signals <- tc.signal
				}
			}()
			go func() {
				// The workload ends when signalled, or after 150ms.
				select {
				case <-proc.signals:
				case <-time.After(150 * time.Millisecond):
				}
				close(proc.done)
			}()
			got := Run(context.Background(), Config{
				Locker: &tc.locker,
				Start: func(e []string) (Process, error) {
					if started {
						rec.unexpected("Start twice")
					}
					started, env = true, e
					return proc, nil
				},
				Env:          []string{"A=1"},
				Signals:      signals,
				LockTimeout:  tc.timeout,
				BusyExitCode: 9,
				KillSignal:   syscall.SIGUSR2,
				KillGrace:    3 * time.Second,
				Log:          quietLog(),
			})
			if got != tc.want {
				t.Errorf("exit %d, want %d", got, tc.want)
			}
			if started != tc.started {
				t.Errorf("started = %v, want %v", started, tc.started)
			}
			select {
			case <-tc.locker.released:
				if !tc.released {
					t.Error("released a lease it never had")
				}
			default:
				if tc.released {
					t.Error("lease not released")
				}
			}
			if want := []string{"stop user defined signal 2", "release"}; started && !slices.Equal(rec.list(), want) {
				t.Errorf("did %q, want %q: what runs under the lock must be stopped before release", rec.list(), want)
			}
			if started && !slices.Equal(rec.grace, []time.Duration{3 * time.Second}) {
				t.Errorf("stopped with grace %v, want the whole --kill-grace, 3s: KillBy is an hour away", rec.grace)
			}
			if started && !slices.Equal(env, []string{"A=1", "LOCKEX_LOCK_PATH=/lockex/x", "LOCKEX_LOCK_NODE=/lockex/x/n__lock__0000000000", "LOCKEX_FENCING_TOKEN=42"}) {
				t.Errorf("workload env %q", env)
			}
		})
	}
}

// runLoss runs a workload that never ends by itself until the lock is lost
// 50ms after it was taken, with --kill-grace 3s and the lease's KillBy at
// killBy after the loss; it returns the exit code and the calls.
func runLoss(t *testing.T, killBy time.Duration) (int, *calls) {
	t.Helper()
	rec := &calls{t: t}
	locker := &fakeLocker{calls: rec, released: make(chan struct{}), loseAt: 50 * time.Millisecond, killBy: killBy}
	proc := &fakeProcess{calls: rec, done: make(chan struct{})}
	code := Run(context.Background(), Config{
		Locker:     locker,
		Start:      func([]string) (Process, error) { return proc, nil },
		Signals:    make(chan os.Signal),
		KillSignal: syscall.SIGTERM,
		KillGrace:  3 * time.Second,
		Observer:   &fakeObserver{calls: rec},
		Log:        quietLog(),
	})
	return code, rec
}

// TestLossStopsFirst: on a loss the workload is told to stop before
// anything is reported, because reporting writes logs, and a log write may
// block (stderr a pipe nobody drains); the lock goes only after the stop.
func TestLossStopsFirst(t *testing.T) {
	code, rec := runLoss(t, time.Hour)
	if code != exitcode.LockLost {
		t.Errorf("exit %d, want 76", code)
	}
	want := []string{"acquired", "started", "stop terminated", "lost", "release", "released"}
	if got := rec.list(); !slices.Equal(got, want) {
		t.Errorf("did %q, want %q", got, want)
	}
}

// TestLossGraceEndsByKillBy: the grace after a loss never reaches past the
// lease's KillBy, when the server may expire the session and another
// holder start; past it already (lockex was frozen), SIGKILL goes at once.
func TestLossGraceEndsByKillBy(t *testing.T) {
	for _, tc := range []struct {
		name     string
		killBy   time.Duration // after the loss
		sig      string
		min, max time.Duration // the grace's bounds
	}{
		{"far", time.Hour, "terminated", 3 * time.Second, 3 * time.Second},
		{"within the grace", time.Second, "terminated", time.Millisecond, time.Second},
		{"passed", -time.Second, "killed", 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, rec := runLoss(t, tc.killBy)
			if code != exitcode.LockLost {
				t.Errorf("exit %d, want 76", code)
			}
			if !slices.Contains(rec.list(), "stop "+tc.sig) || len(rec.grace) != 1 {
				t.Fatalf("did %q, want one stop with %s", rec.list(), tc.sig)
			}
			if g := rec.grace[0]; g < tc.min || g > tc.max {
				t.Errorf("grace %s, want between %s and %s", g, tc.min, tc.max)
			}
		})
	}
}

// TestPanicAfterStart: a panic while the workload runs stops all of it at
// once (SIGKILL, no grace) before the lock is released, and then goes on.
func TestPanicAfterStart(t *testing.T) {
	rec := &calls{t: t}
	locker := &fakeLocker{calls: rec, released: make(chan struct{})}
	proc := &fakeProcess{calls: rec, done: make(chan struct{})}
	var recovered any
	func() {
		defer func() { recovered = recover() }()
		Run(context.Background(), Config{
			Locker:     locker,
			Start:      func([]string) (Process, error) { return proc, nil },
			Signals:    make(chan os.Signal),
			KillSignal: syscall.SIGTERM,
			KillGrace:  3 * time.Second,
			Observer:   &fakeObserver{calls: rec, panicOn: "started"},
			Log:        quietLog(),
		})
	}()
	if want := "observer: started"; fmt.Sprint(recovered) != want {
		t.Errorf("panic %v, want %q to reach the caller", recovered, want)
	}
	want := []string{"acquired", "started", "stop killed", "release", "released"}
	if got := rec.list(); !slices.Equal(got, want) {
		t.Errorf("did %q, want %q", got, want)
	}
	if !slices.Equal(rec.grace, []time.Duration{0}) {
		t.Errorf("grace %v, want none", rec.grace)
	}
}

func TestPendingStop(t *testing.T) {
	signals := make(chan os.Signal, 3)
	if _, ok := pendingStop(signals); ok {
		t.Error("no signal, but a stop")
	}
	signals <- syscall.SIGWINCH
	if _, ok := pendingStop(signals); ok {
		t.Error("SIGWINCH taken for a stop")
	}
	signals <- syscall.SIGWINCH
	signals <- syscall.SIGHUP
	if sig, ok := pendingStop(signals); !ok || sig != syscall.SIGHUP {
		t.Errorf("pendingStop = %v, %v; want hangup, true", sig, ok)
	}
}
