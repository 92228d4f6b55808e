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
// after the threshold of failures in a row, afresh for each round, whose
// number stands where the checker expects a workload's pid.
type standbyCheck struct {
	probe     activecheck.Probe
	threshold int
	checker   *activecheck.Checker
	results   chan supervisor.StandbyResult
	wg        sync.WaitGroup
	cancel    context.CancelFunc
}

// newStandbyCheck returns nil without --standby-url or --standby-cmd. A
// command runs through the reaper, which waits for every child of lockex
// (as PID 1 too), with the workload's environment.
func newStandbyCheck(cfg *config.Config, reaper *proc.Reaper, env []string) *standbyCheck {
	probe := cfg.StandbyCheck
	if cfg.StandbyCommand != nil {
		path := cfg.StandbyCommandPath
		probe = activecheck.Command(cfg.StandbyCommand, func(ctx context.Context, argv []string) (int, []byte, error) {
			return reaper.RunCheck(ctx, path, argv, env)
		})
	}
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
		results: make(chan supervisor.StandbyResult, 1),
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

func (s *standbyCheck) Check(round int) { s.checker.Running(round) }

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
			rec.StandbyChecked(r.Pid, r.Ready, r.Failures, r.Err)
			select {
			case s.results <- supervisor.StandbyResult{Round: r.Pid, Fit: r.Ready, Failures: r.Failures, Err: r.Err}:
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
