package app

import (
	"context"
	"log/slog"
	"strconv"
	"time"

	"github.com/lockex/lockex/internal/activecheck"
	"github.com/lockex/lockex/internal/config"
	"github.com/lockex/lockex/internal/podlabel"
	"github.com/lockex/lockex/internal/status"
	"github.com/lockex/lockex/internal/supervisor"
)

// labelClearMax bounds the wait, as lockex exits, for its pod's
// --active-label to be removed and its --deletion-cost lowered: without
// lockex the pod is not Ready, and a Service skips it and a ReplicaSet
// deletes it first whatever its metadata say.
const labelClearMax = 2 * time.Second

// drainMax bounds how long a stop signal waits for the pod's label to be
// removed before it goes on to the workload (design.md §8): traffic should
// leave first, but a stop asked for must not wait on an API server that
// does not answer.
const drainMax = 2 * time.Second

// activeFollowers are what follows the running workload besides the
// endpoint: the workload's readiness check (--active-http, --active-tcp),
// which decides /active, the pod's label (--active-label), which mirrors
// it, with the pod's deletion cost (--deletion-cost), which mirrors whether
// the lock is held, and the health check (--health-url, --health-cmd). Any
// may be absent.
type activeFollowers struct {
	cfg     *config.Config
	checker *activecheck.Checker
	labeler *podlabel.Labeler
	health  *healthCheck
	stops   []func()
}

// patchFailed is called for every patch of the pod that fails.
func newActiveFollowers(cfg *config.Config, log *slog.Logger, health *healthCheck, patchFailed func()) *activeFollowers {
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
		f.labeler = podlabel.New(*cfg.PodLabel, log, patchFailed)
	}
	return f
}

// observe wraps the recorder's observer: every change also tells the
// checker which workload runs and the labeler whether the pod is active
// and holds.
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
			// A holder that has not heard from zookeeper for half its
			// budget may soon have to stop: traffic leaves first, while
			// the workload still runs (design.md §8).
			w := podlabel.Wish{Active: s.Active() && !s.Silent, Held: s.Held()}
			if w.Held {
				w.Hold = strconv.FormatInt(s.Token, 10)
			}
			f.labeler.Set(w)
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

// lockWatcher is the labeler as the locker tells it of the lock; nil
// without a labeler.
func (f *activeFollowers) lockWatcher() lockWatcher {
	if f.labeler == nil {
		return nil // not a nil *Labeler in a non-nil interface
	}
	return f.labeler
}

// drain is the supervisor's Drain: nil unless lockex keeps a label that
// routes traffic to its pod.
func (f *activeFollowers) drain(log *slog.Logger) func() <-chan struct{} {
	if f.labeler == nil || f.cfg.PodLabel.Key == "" {
		return nil
	}
	return func() <-chan struct{} {
		done := make(chan struct{})
		drained := f.labeler.Drain()
		go func() {
			defer close(done)
			t := time.NewTimer(drainMax)
			defer t.Stop()
			select {
			case <-drained:
				log.Info("pod label removed", "pod", f.cfg.PodLabel.Pod, "label", f.cfg.PodLabel.Key)
			case <-t.C:
				log.Warn("pod label not removed in time", "pod", f.cfg.PodLabel.Pod, "label", f.cfg.PodLabel.Key, "waited", drainMax)
			}
		}()
		return done
	}
}

// stop ends them; the pod tells a standby on the way out.
func (f *activeFollowers) stop() {
	for _, stop := range f.stops {
		stop()
	}
}
