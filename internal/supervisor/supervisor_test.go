package supervisor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/lockex/lockex/internal/exitcode"
)

// fakeLocker hands out a lease after wait, or fails with err; a cancelled
// context ends the wait as the real recipes do.
type fakeLocker struct {
	wait     time.Duration
	err      error
	loseAt   time.Duration // after acquiring, 0 for never
	released chan struct{}
}

func (l *fakeLocker) Connect(context.Context) error { return nil }

func (l *fakeLocker) Acquire(ctx context.Context) (Lease, error) {
	select {
	case <-time.After(l.wait):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if l.err != nil {
		return nil, l.err
	}
	lease := fakeLease{released: l.released, lost: make(chan struct{})}
	if l.loseAt > 0 {
		time.AfterFunc(l.loseAt, func() { close(lease.lost) })
	}
	return lease, nil
}

type fakeLease struct{ released, lost chan struct{} }

// events records, in order, what Run did to the fakes.
var events []string

func (fakeLease) Path() string            { return "/lockex/x" }
func (fakeLease) Node() string            { return "/lockex/x/n__lock__0000000000" }
func (fakeLease) Token() int64            { return 42 }
func (fakeLease) Waited() time.Duration   { return 0 }
func (l fakeLease) Done() <-chan struct{} { return l.lost }
func (l fakeLease) Err() error {
	select {
	case <-l.lost:
		return errors.New("session expired")
	default:
		return nil
	}
}
func (l fakeLease) Release() error {
	events = append(events, "release")
	close(l.released)
	return nil
}

// fakeProcess exits with code when it receives a signal, or on its own
// after life.
type fakeProcess struct {
	done    chan struct{}
	code    int
	signals chan syscall.Signal
}

func (p *fakeProcess) Pid() int              { return 1234 }
func (p *fakeProcess) Done() <-chan struct{} { return p.done }
func (p *fakeProcess) ExitCode() int         { return p.code }
func (p *fakeProcess) Signal(s syscall.Signal) error {
	p.signals <- s
	return nil
}
func (p *fakeProcess) Stop(sig syscall.Signal, grace time.Duration) {
	events = append(events, fmt.Sprintf("stop %s %s", sig, grace))
}

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
			tc.locker.released = make(chan struct{})
			events = nil
			signals := make(chan os.Signal, 1)
			var env []string
			proc := &fakeProcess{done: make(chan struct{}), code: tc.exit, signals: make(chan syscall.Signal, 1)}
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
					started, env = true, e
					return proc, nil
				},
				Env:          []string{"A=1"},
				Signals:      signals,
				LockTimeout:  tc.timeout,
				BusyExitCode: 9,
				KillSignal:   syscall.SIGUSR2,
				KillGrace:    3 * time.Second,
				Log:          slog.New(slog.NewTextHandler(io.Discard, nil)),
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
			if want := []string{"stop user defined signal 2 3s", "release"}; started && !slices.Equal(events, want) {
				t.Errorf("did %q, want %q: what runs under the lock must be stopped before release", events, want)
			}
			if started && !slices.Equal(env, []string{"A=1", "LOCKEX_LOCK_PATH=/lockex/x", "LOCKEX_LOCK_NODE=/lockex/x/n__lock__0000000000", "LOCKEX_FENCING_TOKEN=42"}) {
				t.Errorf("workload env %q", env)
			}
		})
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
