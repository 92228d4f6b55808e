package status

import (
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
)

type recorded struct{ events []Event }

func (r *recorded) Observe(c Change, _ Snapshot) { r.events = append(r.events, c.Event) }

// TestRecorder: a run's changes, in order, and what the snapshot and its
// description say after each.
func TestRecorder(t *testing.T) {
	obs := &recorded{}
	r := New(slog.New(slog.NewTextHandler(io.Discard, nil)), "/lockex/x", 1,
		func(error) string { return "suspend_deadline" }, obs)
	steps := []struct {
		do                               func()
		phase                            Phase
		connected, suspended, gone, held bool
		says                             string
	}{
		{func() { r.Connecting([]string{"zk:2181"}, 0) }, Connecting, false, false, false, false, "connecting to zookeeper for /lockex/x"},
		{func() { r.Connected("zk:2181", 1, 0) }, Connecting, true, false, false, false, "connecting"},
		{func() { r.Contenders(3); r.Waiting(2) }, Waiting, true, false, false, false, "waiting for /lockex/x (2 contenders ahead)"},
		{func() { r.Acquired("/lockex/x/n", 7, 0) }, Holding, true, false, false, true, "fencing token 7"},
		{func() { r.WorkloadStarted(42) }, Running, true, false, false, true, "workload pid 42 running"},
		{func() { r.Disconnected() }, Running, false, true, false, true, "disconnected from zookeeper (suspended)"},
		{func() { r.Reconnected("zk:2181") }, Running, true, false, false, true, "workload pid 42 running"},
		{func() { r.Disconnected(); r.Lost(errors.New("late")) }, Lost, false, true, true, false, "lost /lockex/x (suspend_deadline)"},
		{func() { r.Released() }, Lost, false, true, true, false, "lost"},
	}
	for i, s := range steps {
		s.do()
		snap := r.Snapshot()
		if snap.Phase != s.phase || snap.Connected != s.connected || snap.Suspended != s.suspended ||
			snap.SessionGone() != s.gone || snap.Held() != s.held {
			t.Errorf("step %d: %+v; want phase %s connected %v suspended %v gone %v held %v",
				i, snap, s.phase, s.connected, s.suspended, s.gone, s.held)
		}
		if !strings.Contains(snap.Describe(), s.says) {
			t.Errorf("step %d: %q, want it to say %q", i, snap.Describe(), s.says)
		}
	}
	want := []Event{EvConnecting, EvConnected, EvWaiting, EvWaiting, EvAcquired, EvStarted,
		EvDisconnected, EvReconnected, EvDisconnected, EvLost, EvReleased}
	if len(obs.events) != len(want) {
		t.Fatalf("observed %v, want %v", obs.events, want)
	}
	for i := range want {
		if obs.events[i] != want[i] {
			t.Errorf("event %d = %v, want %v", i, obs.events[i], want[i])
		}
	}
}

// TestNodeDeletedKeepsSession: a lock lost to a deleted node leaves the
// session alive, so /healthz stays up while the workload is stopped.
func TestNodeDeletedKeepsSession(t *testing.T) {
	r := New(slog.New(slog.NewTextHandler(io.Discard, nil)), "/lockex/x", 1, func(error) string { return "node_deleted" })
	r.Connected("zk", 1, 0)
	r.Acquired("/lockex/x/n", 1, 0)
	r.Lost(errors.New("deleted"))
	if s := r.Snapshot(); s.SessionGone() || s.Held() {
		t.Errorf("%+v: want the session alive and the lock not held", s)
	}
}
