package app

import (
	"context"
	"log/slog"
	"time"

	"github.com/lockex/lockex/internal/activecheck"
	"github.com/lockex/lockex/internal/config"
	"github.com/lockex/lockex/internal/podlabel"
	"github.com/lockex/lockex/internal/status"
	"github.com/lockex/lockex/internal/supervisor"
)

// labelClearMax bounds the wait, as lockex exits, for its pod's
// --active-label to be removed: without lockex the pod is not Ready, and a
// Service skips it whatever its labels say.
const labelClearMax = 2 * time.Second

// activeFollowers are what follows the running workload besides the
// endpoint: the workload's readiness check (--active-http, --active-tcp),
// which decides /active, the pod label (--active-label), which mirrors it,
// and the health check (--health-url, --health-cmd). Any may be absent.
type activeFollowers struct {
	cfg     *config.Config
	checker *activecheck.Checker
	labeler *podlabel.Labeler
	health  *healthCheck
	stops   []func()
}

func newActiveFollowers(cfg *config.Config, log *slog.Logger, health *healthCheck) *activeFollowers {
	f := &activeFollowers{cfg: cfg, health: health}
	if cfg.ActiveCheck != nil {
		f.checker = activecheck.New(activecheck.Config{
			Probe:            cfg.ActiveCheck,
			Period:           cfg.ActivePeriod.D(),
			Timeout:          cfg.ActiveTimeout.D(),
			FailureThreshold: cfg.ActiveFailures,
		})
	}
	if cfg.PodLabel != nil {
		f.labeler = podlabel.New(*cfg.PodLabel, log)
	}
	return f
}

// observe wraps the recorder's observer: every change also tells the
// checker which workload runs and the labeler whether the pod is active.
// Neither blocks.
func (f *activeFollowers) observe(next func(status.Event, status.Snapshot)) func(status.Event, status.Snapshot) {
	return func(ev status.Event, s status.Snapshot) {
		next(ev, s)
		pid := 0
		if s.State == supervisor.Running {
			pid = s.Pid
		}
		if f.checker != nil {
			f.checker.Running(pid)
		}
		if f.health != nil {
			f.health.checker.Running(pid)
		}
		if f.labeler != nil {
			f.labeler.Set(s.Active())
		}
	}
}

// start runs the checkers and the labeler in the background.
func (f *activeFollowers) start(ctx context.Context, rec *status.Recorder) {
	if f.health != nil {
		f.health.start(ctx, rec)
		f.stops = append(f.stops, f.health.stop)
	}
	if f.checker != nil {
		rec.CheckWith(f.cfg.ActiveCheck.String())
		ctx, cancel := context.WithCancel(ctx)
		go f.checker.Run(ctx, func(r activecheck.Result) { rec.WorkloadChecked(r.Pid, r.Ready, r.Err) })
		f.stops = append(f.stops, cancel)
	}
	if f.labeler != nil {
		ctx, cancel := context.WithCancel(ctx)
		go f.labeler.Run(ctx)
		f.stops = append(f.stops, func() { cancel(); f.labeler.Clear(labelClearMax) })
	}
}

// stop ends them; the pod label is removed on the way out.
func (f *activeFollowers) stop() {
	for _, stop := range f.stops {
		stop()
	}
}
