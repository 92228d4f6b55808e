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

// healthCheck checks the running workload's health (--health-url,
// --health-cmd) with the machinery of the readiness check, and turns the
// threshold-th failure in a row into the supervisor's event, once per
// workload. The supervisor decides what it means.
type healthCheck struct {
	probe     activecheck.Probe
	threshold int
	checker   *activecheck.Checker
	verdicts  chan supervisor.HealthFailure
	wg        sync.WaitGroup
	cancel    context.CancelFunc
}

// newHealthCheck returns nil without --health-url or --health-cmd. A
// command runs through the reaper, which waits for every child of lockex,
// with the workload's environment.
func newHealthCheck(cfg *config.Config, reaper *proc.Reaper, env []string) *healthCheck {
	probe := reaped(cfg.HealthCheck, cfg.HealthCommand, cfg.HealthCommandPath, reaper, env)
	if probe == nil {
		return nil
	}
	return &healthCheck{
		probe:     probe,
		threshold: cfg.HealthFailures,
		checker: activecheck.New(activecheck.Config{
			Probe:            probe,
			Period:           cfg.HealthPeriod.D(),
			Timeout:          cfg.HealthTimeout.D(),
			FailureThreshold: cfg.HealthFailures,
			StartPeriod:      cfg.HealthStart.D(),
		}),
		verdicts: make(chan supervisor.HealthFailure, 1),
	}
}

// Verdicts is the supervisor's Health channel; nil without a check.
func (h *healthCheck) Verdicts() <-chan supervisor.HealthFailure {
	if h == nil {
		return nil
	}
	return h.verdicts
}

// start checks in the background, recording each result in rec.
func (h *healthCheck) start(ctx context.Context, rec *status.Recorder) {
	rec.HealthCheckWith(h.probe.String(), h.threshold)
	ctx, h.cancel = context.WithCancel(ctx)
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		h.checker.Run(ctx, func(r activecheck.Result) {
			rec.HealthChecked(r.Pid, r.Failures, r.Err)
			if r.Failures != h.threshold {
				return
			}
			select {
			case h.verdicts <- supervisor.HealthFailure{Pid: r.Pid, Failures: r.Failures, Err: r.Err}:
			case <-ctx.Done():
			}
		})
	}()
}

// stop ends the checks, and waits for one in flight, which is killed.
func (h *healthCheck) stop() {
	h.cancel()
	h.wg.Wait()
}

// reaped is the check a flag pair asks for: the URL's probe, or with a
// command, the command run through the reaper, which waits for every child
// of lockex (as PID 1 too), with env. Nil for neither.
func reaped(url activecheck.Probe, argv []string, path string, reaper *proc.Reaper, env []string) activecheck.Probe {
	if argv == nil {
		return url
	}
	return activecheck.Command(argv, func(ctx context.Context, argv []string) (int, []byte, error) {
		return reaper.RunCheck(ctx, path, argv, env)
	})
}
