package status

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/lockex/lockex/internal/supervisor"
)

// TestReviewHealthStaleResult (review): a check in flight as the workload
// exits, is lost or is stopped reports after it. Its result must not make
// the gone workload look healthy or failing: lockex_workload_healthy stays
// 0, /active stays 503, the failure counter does not move, and the probes'
// body says nothing of it.
func TestReviewHealthStaleResult(t *testing.T) {
	refused := errors.New("connection refused")
	for _, end := range []supervisor.Change{
		{From: supervisor.Running, To: supervisor.Holding, WorkloadCode: 0},
		{From: supervisor.Running, To: supervisor.Lost, Err: errors.New("session expired")},
		{From: supervisor.Running, To: supervisor.Stopping, Pid: 42, Err: fmt.Errorf("%w 3 times in a row: %w", supervisor.ErrUnhealthy, refused)},
	} {
		t.Run(end.To.String(), func(t *testing.T) {
			var events []Event
			r := New(slog.New(slog.NewTextHandler(io.Discard, nil)), "/lockex/x", 1, func(ev Event, _ Snapshot) { events = append(events, ev) })
			r.HealthCheckWith("exec check", 3)
			r.Changed(supervisor.Change{From: supervisor.Waiting, To: supervisor.Holding, Node: "/lockex/x/n", Token: 7})
			r.Changed(supervisor.Change{From: supervisor.Holding, To: supervisor.Running, Pid: 42})
			r.HealthChecked(42, 0, nil)
			if !r.Snapshot().Healthy() {
				t.Fatal("a passing workload is not healthy")
			}
			r.Changed(end)
			before := r.Snapshot()
			events = nil
			for _, late := range []struct {
				failures int
				err      error
			}{{0, nil}, {1, refused}, {3, refused}} {
				r.HealthChecked(42, late.failures, late.err)
				s := r.Snapshot()
				if s.Healthy() || s.Active() || s.HealthFailures != before.HealthFailures || s.HealthOK != before.HealthOK ||
					s.Describe() != before.Describe() || strings.Contains(s.Describe(), "health check failed") {
					t.Errorf("late result %+v changed the snapshot: %+v %q", late, s, s.Describe())
				}
			}
			if events != nil {
				t.Errorf("late results passed on %v, want nothing", events)
			}
		})
	}
}
