package app

import (
	"context"
	"sync"

	"github.com/lockex/lockex/internal/activecheck"
	"github.com/lockex/lockex/internal/config"
	"github.com/lockex/lockex/internal/proc"
	"github.com/lockex/lockex/internal/status"
	"github.com/lockex/lockex/internal/supervisor"
)

// standbyCheck checks the standby itself (--standby-url, --standby-cmd)
// before and while it queues, with the health check's timing, and passes
// every result to the supervisor, which decides whether to queue or to
// leave the queue (docs/design.md §4.7). The readiness checker's counting
// is exactly what it needs: not fit until a check passes, unfit again
// after the threshold of failures in a row, afresh for each stretch of
// checks the supervisor asks for (Check).
type standbyCheck struct {
	probe     activecheck.Probe
	threshold int
	checker   *activecheck.Checker
	results   chan supervisor.StandbyResult
	wg        sync.WaitGroup
	cancel    context.CancelFunc

	// The checker starts afresh only when it sees another pid, and a
	// Check(0) that Check(round) follows within one check (leaving the
	// queue replaces a session in milliseconds) would go unseen: its
	// state from before, a pass during the leave, would carry over. So
	// each stretch of checks that Check asks for has a number of its
	// own, which stands where the checker expects a pid, and results of
	// a stretch that is over are dropped, also one waiting to be taken:
	// results is unbuffered, and over closes as the stretch ends, in the
	// supervisor's Check, when it is not taking results.
	mu      sync.Mutex
	round   int           // the round asked for, 0 for none
	stretch int           // the checker's pid for it
	over    chan struct{} // closes as the stretch ends
}

// newStandbyCheck returns nil without --standby-url or --standby-cmd. A
// command runs through the reaper, which waits for every child of lockex
// (as PID 1 too), with the workload's environment.
func newStandbyCheck(cfg *config.Config, reaper *proc.Reaper, env []string) *standbyCheck {
	probe := reaped(cfg.StandbyCheck, cfg.StandbyCommand, cfg.StandbyCommandPath, reaper, env)
	if probe == nil {
		return nil
	}
	return &standbyCheck{
		probe:     probe,
		threshold: cfg.HealthFailures,
		checker: activecheck.New(activecheck.Config{
			Probe:            probe,
			Period:           cfg.HealthPeriod.D(),
			Timeout:          cfg.HealthTimeout.D(),
			FailureThreshold: cfg.HealthFailures,
		}),
		results: make(chan supervisor.StandbyResult),
		over:    make(chan struct{}),
	}
}

// forSupervisor is the check as the supervisor's Config takes it: a nil
// interface, not a nil pointer in one, without a check.
func (s *standbyCheck) forSupervisor() supervisor.Standby {
	if s == nil {
		return nil
	}
	return s
}

func (s *standbyCheck) Check(round int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if round == s.round {
		return
	}
	s.round = round
	close(s.over)
	s.over = make(chan struct{})
	if round == 0 {
		s.checker.Running(0)
		return
	}
	s.stretch++
	s.checker.Running(s.stretch)
}

// roundOf is the round a result of stretch speaks for, and a channel
// that closes once the stretch is over; false if it is over already.
func (s *standbyCheck) roundOf(stretch int) (int, <-chan struct{}, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.round, s.over, s.round != 0 && stretch == s.stretch
}

func (s *standbyCheck) Results() <-chan supervisor.StandbyResult { return s.results }

// start checks in the background, recording each result in rec before
// the supervisor sees it, so that a move it makes is never ahead of the
// state the probes show.
func (s *standbyCheck) start(ctx context.Context, rec *status.Recorder) {
	if s == nil {
		return
	}
	rec.StandbyCheckWith(s.probe.String(), s.threshold)
	ctx, s.cancel = context.WithCancel(ctx)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.checker.Run(ctx, func(r activecheck.Result) {
			round, over, current := s.roundOf(r.Pid)
			if !current {
				return
			}
			rec.StandbyChecked(round, r.Ready, r.Failures, r.Err)
			select {
			case s.results <- supervisor.StandbyResult{Round: round, Fit: r.Ready, Failures: r.Failures, Err: r.Err}:
			case <-over:
			case <-ctx.Done():
			}
		})
	}()
}

// stop ends the checks, and waits for one in flight, which is killed.
func (s *standbyCheck) stop() {
	if s == nil {
		return
	}
	s.cancel()
	s.wg.Wait()
}
