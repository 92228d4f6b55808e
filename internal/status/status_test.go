package status

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/lockex/lockex/internal/supervisor"
	"github.com/lockex/lockex/internal/zklock"
)

// TestRecorder: a run's changes, in order: the snapshot and its
// description after each, the event passed on, and exactly one log line
// for each change of state.
func TestRecorder(t *testing.T) {
	var logs bytes.Buffer
	r := New(slog.New(slog.NewTextHandler(&logs, nil)), "/lockex/x", 1, nil)
	lost := fmt.Errorf("%w: for too long", zklock.ErrSuspendedTooLong)
	steps := []struct {
		do                               func()
		state                            supervisor.State
		connected, suspended, gone, held bool
		says                             string
		logs                             []string // the lines it logs, in order
	}{
		{func() { r.Changed(supervisor.Change{From: supervisor.Starting, To: supervisor.Connecting}) },
			supervisor.Connecting, false, false, false, false, "connecting to zookeeper for /lockex/x", nil},
		{func() { r.Connecting([]string{"zk:2181"}, 0); r.Connected("zk:2181", 1, 0) },
			supervisor.Connecting, true, false, false, false, "connecting", []string{"connecting to zookeeper", "connected to zookeeper"}},
		{func() {
			r.Changed(supervisor.Change{From: supervisor.Connecting, To: supervisor.Waiting})
			r.Contenders(3)
			r.Waiting(2)
		}, supervisor.Waiting, true, false, false, false, "waiting for /lockex/x (2 contenders ahead)", []string{"waiting for the lock"}},
		{func() {
			r.Changed(supervisor.Change{From: supervisor.Waiting, To: supervisor.Holding, Node: "/lockex/x/n", Token: 7})
		}, supervisor.Holding, true, false, false, true, "fencing token 7", []string{"lock acquired"}},
		{func() { r.Changed(supervisor.Change{From: supervisor.Holding, To: supervisor.Running, Pid: 42}) },
			supervisor.Running, true, false, false, true, "workload pid 42 running", []string{"workload started"}},
		{func() { r.Disconnected() }, supervisor.Running, false, true, false, true, "disconnected from zookeeper (suspended)",
			[]string{"suspended: disconnected from zookeeper; the workload runs on"}},
		{func() { r.Reconnected("zk:2181") }, supervisor.Running, true, false, false, true, "workload pid 42 running",
			[]string{"reconnected to zookeeper"}},
		{func() {
			r.Disconnected()
			r.Changed(supervisor.Change{From: supervisor.Running, To: supervisor.Lost, Err: lost, Stopping: []string{"process group 42"}})
		}, supervisor.Lost, false, true, true, false, "lost /lockex/x (suspend_deadline)",
			[]string{"suspended: disconnected", "lock lost; stopping the workload"}},
		{func() { r.Changed(supervisor.Change{From: supervisor.Lost, To: supervisor.Released, Code: 76}) },
			supervisor.Released, false, true, true, false, "lost /lockex/x (suspend_deadline); released", []string{"lock released"}},
	}
	for i, s := range steps {
		logs.Reset()
		s.do()
		snap := r.Snapshot()
		if snap.State != s.state || snap.Connected != s.connected || snap.Suspended != s.suspended ||
			snap.SessionGone() != s.gone || snap.Held() != s.held {
			t.Errorf("step %d: %+v; want state %s connected %v suspended %v gone %v held %v",
				i, snap, s.state, s.connected, s.suspended, s.gone, s.held)
		}
		if !strings.Contains(snap.Describe(), s.says) {
			t.Errorf("step %d: %q, want it to say %q", i, snap.Describe(), s.says)
		}
		lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
		if logs.Len() == 0 {
			lines = nil
		}
		if len(lines) != len(s.logs) {
			t.Errorf("step %d logged %d lines, want %d:\n%s", i, len(lines), len(s.logs), logs.String())
			continue
		}
		for j, want := range s.logs {
			if !strings.Contains(lines[j], want) {
				t.Errorf("step %d, line %d: %q, want %q", i, j, lines[j], want)
			}
		}
	}
	if s := r.Snapshot(); s.Loss != zklock.SuspendDeadline || !s.LockLost {
		t.Errorf("after the loss: %+v, want LockLost and Loss suspend_deadline", s)
	}
}

// TestEvents: the changes the metrics count are passed on as what they
// are, once each.
func TestEvents(t *testing.T) {
	var events []Event
	r := New(slog.New(slog.DiscardHandler), "/lockex/x", 1, func(ev Event, _ Snapshot) { events = append(events, ev) })
	r.Changed(supervisor.Change{From: supervisor.Starting, To: supervisor.Connecting})
	r.Connected("zk", 1, time.Second)
	r.Disconnected()
	r.Expired()
	r.Changed(supervisor.Change{From: supervisor.Connecting, To: supervisor.Waiting})
	r.Changed(supervisor.Change{From: supervisor.Waiting, To: supervisor.Holding})
	r.Changed(supervisor.Change{From: supervisor.Holding, To: supervisor.Lost, Err: zklock.ErrSessionExpired})
	r.Changed(supervisor.Change{From: supervisor.Lost, To: supervisor.Released})
	want := []Event{EvOther, EvOther, EvDisconnected, EvExpired, EvOther, EvAcquired, EvLost, EvOther}
	if fmt.Sprint(events) != fmt.Sprint(want) {
		t.Errorf("events %v, want %v", events, want)
	}
}

// TestNodeDeletedKeepsSession: a lock lost to a deleted node leaves the
// session alive, so /healthz stays up while the workload is stopped.
func TestNodeDeletedKeepsSession(t *testing.T) {
	r := New(slog.New(slog.DiscardHandler), "/lockex/x", 1, nil)
	r.Connected("zk", 1, 0)
	r.Changed(supervisor.Change{From: supervisor.Waiting, To: supervisor.Holding, Node: "/lockex/x/n", Token: 1})
	r.Changed(supervisor.Change{From: supervisor.Holding, To: supervisor.Lost, Err: fmt.Errorf("%w: /lockex/x/n", zklock.ErrNodeDeleted)})
	if s := r.Snapshot(); s.SessionGone() || s.Held() {
		t.Errorf("%+v: want the session alive and the lock not held", s)
	}
}

// TestGaveUpLines: each way of not getting the lock is one line that says
// why, at the level it deserves.
func TestGaveUpLines(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{supervisor.StoppedBy{Signal: 15}, "level=WARN msg=\"stopped while waiting for the lock\" signal=terminated"},
		{fmt.Errorf("%w: --locktimeout 1.2s passed", supervisor.ErrLockTimeout), "level=WARN msg=\"lock not acquired\" reason=\"lock timeout: --locktimeout 1.2s passed\""},
		{errors.New("zookeeper unreachable"), "level=ERROR msg=\"lock not acquired\" err=\"zookeeper unreachable\""},
	} {
		var logs bytes.Buffer
		r := New(slog.New(slog.NewTextHandler(&logs, nil)), "/lockex/x", 1, nil)
		r.Changed(supervisor.Change{From: supervisor.Waiting, To: supervisor.GaveUp, Err: tc.err})
		if lines := strings.Count(logs.String(), "\n"); lines != 1 || !strings.Contains(logs.String(), tc.want) {
			t.Errorf("%v: logged %q, want one line with %q", tc.err, logs.String(), tc.want)
		}
	}
}

// TestWorkloadChecked: with a check, /active waits for the workload to
// pass it; each change of readiness is one log line; a result about a
// workload that no longer runs changes nothing.
func TestWorkloadChecked(t *testing.T) {
	var logs bytes.Buffer
	r := New(slog.New(slog.NewTextHandler(&logs, nil)), "/lockex/x", 1, nil)
	r.CheckWith("GET http://127.0.0.1:8080/ready")
	r.Changed(supervisor.Change{From: supervisor.Waiting, To: supervisor.Holding, Node: "/lockex/x/n", Token: 7})
	r.Changed(supervisor.Change{From: supervisor.Holding, To: supervisor.Running, Pid: 42})
	logs.Reset()
	refused := errors.New("connection refused")
	steps := []struct {
		pid    int
		ready  bool
		err    error
		active bool
		says   string
		logs   string // the one line logged, "" for none
	}{
		{0, false, nil, false, "workload pid 42 running, not ready yet (GET http://127.0.0.1:8080/ready)", ""},
		{42, false, refused, false, "not ready (connection refused)", ""},
		{42, true, nil, true, "workload pid 42 running, ready (GET http://127.0.0.1:8080/ready)", "level=INFO msg=\"workload ready; active\""},
		{42, true, refused, true, "ready", ""},
		{42, false, refused, false, "not ready (connection refused)", "level=WARN msg=\"workload not ready; not active\""},
		{41, true, nil, false, "not ready (connection refused)", ""},
	}
	for i, s := range steps {
		logs.Reset()
		if s.pid != 0 {
			r.WorkloadChecked(s.pid, s.ready, s.err)
		}
		snap := r.Snapshot()
		if snap.Active() != s.active || !strings.Contains(snap.Describe(), s.says) {
			t.Errorf("step %d: active %v %q, want %v saying %q", i, snap.Active(), snap.Describe(), s.active, s.says)
		}
		if got := strings.TrimSpace(logs.String()); (s.logs == "") != (got == "") || !strings.Contains(got, s.logs) || strings.Count(got, "\n") > 0 {
			t.Errorf("step %d logged %q, want %q", i, got, s.logs)
		}
	}
	r.WorkloadChecked(42, true, nil)
	r.Changed(supervisor.Change{From: supervisor.Running, To: supervisor.Holding, WorkloadCode: 0})
	r.WorkloadChecked(42, true, nil)
	if s := r.Snapshot(); s.Active() || s.WorkloadReady {
		t.Errorf("after the workload ended: %+v, want not active", s)
	}

	// Without a check, running is active.
	plain := New(slog.New(slog.DiscardHandler), "/lockex/x", 1, nil)
	plain.Changed(supervisor.Change{From: supervisor.Holding, To: supervisor.Running, Pid: 1})
	if s := plain.Snapshot(); !s.Active() || strings.Contains(s.Describe(), "ready") {
		t.Errorf("no check: active %v %q", s.Active(), s.Describe())
	}
}

// TestMaxRuntimeStop: lockex stopping a workload that ran for
// --max-runtime holds the lock still, is not active, is one warning that
// says why, and is counted once.
func TestMaxRuntimeStop(t *testing.T) {
	var logs bytes.Buffer
	var events []Event
	r := New(slog.New(slog.NewTextHandler(&logs, nil)), "/lockex/x", 1, func(ev Event, _ Snapshot) { events = append(events, ev) })
	r.Changed(supervisor.Change{From: supervisor.Waiting, To: supervisor.Holding, Node: "/lockex/x/n", Token: 7})
	r.Changed(supervisor.Change{From: supervisor.Holding, To: supervisor.Running, Pid: 42})
	logs.Reset()
	events = nil
	why := fmt.Errorf("%w: the workload ran for --max-runtime 1s", supervisor.ErrMaxRuntime)
	r.Changed(supervisor.Change{From: supervisor.Running, To: supervisor.Stopping, Err: why, Stopping: []string{"process group 42"}})
	s := r.Snapshot()
	if !s.Held() || s.Active() || s.Pid != 0 {
		t.Errorf("%+v: want held, not active, no pid", s)
	}
	if want := "holding /lockex/x as /lockex/x/n (fencing token 7); stopping the workload (max runtime passed: the workload ran for --max-runtime 1s)"; s.Describe() != want {
		t.Errorf("says %q, want %q", s.Describe(), want)
	}
	want := `level=WARN msg="stopping the workload" reason="max runtime passed: the workload ran for --max-runtime 1s" stopping="[process group 42]"`
	if got := logs.String(); strings.Count(got, "\n") != 1 || !strings.Contains(got, want) {
		t.Errorf("logged %q, want one line with %q", got, want)
	}
	r.Changed(supervisor.Change{From: supervisor.Stopping, To: supervisor.Released, Code: 124})
	if fmt.Sprint(events) != fmt.Sprint([]Event{EvMaxRuntime, EvOther}) {
		t.Errorf("events %v, want one EvMaxRuntime, then the release", events)
	}
	if s := r.Snapshot(); s.Held() || s.Describe() != "released /lockex/x" {
		t.Errorf("after the release: %+v %q", s, s.Describe())
	}
}

// TestRequeueRounds: between rounds of --requeue the lock is not held and
// the backoff is described; a new round begins afresh: the last round's
// loss and expired session no longer fail /healthz, and the begin is
// counted.
func TestRequeueRounds(t *testing.T) {
	var logs bytes.Buffer
	var events []Event
	r := New(slog.New(slog.NewTextHandler(&logs, nil)), "/lockex/x", 1, func(ev Event, _ Snapshot) { events = append(events, ev) })
	r.Changed(supervisor.Change{From: supervisor.Starting, To: supervisor.Connecting, Round: 1})
	r.Connected("zk", 1, time.Second)
	r.Changed(supervisor.Change{From: supervisor.Connecting, To: supervisor.Waiting})
	r.Changed(supervisor.Change{From: supervisor.Waiting, To: supervisor.Holding, Node: "/lockex/x/n", Token: 7})
	r.Changed(supervisor.Change{From: supervisor.Holding, To: supervisor.Running, Pid: 42})
	r.Expired()
	r.Changed(supervisor.Change{From: supervisor.Running, To: supervisor.Lost, Err: zklock.ErrSessionExpired})
	r.Changed(supervisor.Change{From: supervisor.Lost, To: supervisor.Released, Code: 76})
	logs.Reset()
	events = nil
	r.Changed(supervisor.Change{From: supervisor.Released, To: supervisor.Backoff, Backoff: 2 * time.Second, Round: 2, SessionClosed: true})
	s := r.Snapshot()
	if s.Held() || s.Active() || !s.SessionGone() || s.Connected {
		t.Errorf("%+v: want not held, not active, not connected, and the expiry still told", s)
	}
	if want := "released /lockex/x; contending again after 2s (round 2); zookeeper session expired"; s.Describe() != want {
		t.Errorf("says %q, want %q", s.Describe(), want)
	}
	if got, want := logs.String(), `level=INFO msg="contending again after the backoff" backoff=2s round=2`; strings.Count(got, "\n") != 1 || !strings.Contains(got, want) {
		t.Errorf("logged %q, want one line with %q", got, want)
	}
	r.Changed(supervisor.Change{From: supervisor.Backoff, To: supervisor.Connecting, Round: 2})
	if s := r.Snapshot(); s.SessionGone() || s.LockLost || s.Node != "" || s.Round != 2 || s.Connected {
		t.Errorf("%+v: a new round, want nothing of the last one's loss, and not connected yet", s)
	}
	if fmt.Sprint(events) != fmt.Sprint([]Event{EvOther, EvRequeued}) {
		t.Errorf("events %v, want the backoff, then one EvRequeued", events)
	}
	r.Connected("zk", 2, time.Second)
	if s := r.Snapshot(); !s.Connected {
		t.Errorf("%+v: the new round's session, want connected", s)
	}
	logs.Reset()
	r.Changed(supervisor.Change{From: supervisor.Connecting, To: supervisor.Backoff, Backoff: time.Second, Round: 3})
	if s := r.Snapshot(); !s.Connected {
		t.Errorf("%+v: the session kept through the backoff, want connected", s)
	}
	r.Changed(supervisor.Change{From: supervisor.Backoff, To: supervisor.GaveUp, Err: supervisor.StoppedBy{Signal: 15}})
	if got := logs.String(); !strings.Contains(got, `level=WARN msg="stopped between rounds" signal=terminated`) {
		t.Errorf("logged %q, want the stop between rounds", got)
	}
}

// TestHealthChecked: the health check's results, then the stop for it:
// what the snapshot says, the events the metrics count and the lines
// logged, one per change; results about another workload change nothing.
func TestHealthChecked(t *testing.T) {
	var logs bytes.Buffer
	var events []Event
	r := New(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})), "/lockex/x", 1, func(ev Event, _ Snapshot) { events = append(events, ev) })
	r.HealthCheckWith("GET http://127.0.0.1:8080/health", 2)
	r.Changed(supervisor.Change{From: supervisor.Waiting, To: supervisor.Holding, Node: "/lockex/x/n", Token: 7})
	r.Changed(supervisor.Change{From: supervisor.Holding, To: supervisor.Running, Pid: 42})
	if s := r.Snapshot(); s.Healthy() {
		t.Errorf("not checked yet: %+v, want not healthy", s)
	}
	refused := errors.New("connection refused")
	steps := []struct {
		pid, failures int
		err           error
		healthy       bool
		says          string
		logs          string // the one line logged, "" for none
		ev            Event  // passed on, EvOther for none
	}{
		{42, 0, refused, false, "workload pid 42 running", "level=DEBUG", EvHealthFailed},
		{42, 0, nil, true, "workload pid 42 running", "level=INFO msg=\"health check passed\"", EvOther},
		{42, 0, nil, true, "workload pid 42 running", "", EvOther},
		{42, 1, refused, false, "health check failed 1 of 2 (connection refused)", "level=WARN msg=\"health check failed\"", EvHealthFailed},
		{41, 0, nil, false, "health check failed 1 of 2", "", -1},
	}
	for i, s := range steps {
		logs.Reset()
		events = nil
		r.HealthChecked(s.pid, s.failures, s.err)
		snap := r.Snapshot()
		if snap.Healthy() != s.healthy || !strings.Contains(snap.Describe(), s.says) || !snap.Active() {
			t.Errorf("step %d: healthy %v %q, want %v saying %q, and active", i, snap.Healthy(), snap.Describe(), s.healthy, s.says)
		}
		if got := strings.TrimSpace(logs.String()); (s.logs == "") != (got == "") || !strings.Contains(got, s.logs) || strings.Count(got, "\n") > 0 {
			t.Errorf("step %d logged %q, want %q", i, got, s.logs)
		}
		if want := []Event{s.ev}; s.ev == -1 && events != nil || s.ev != -1 && fmt.Sprint(events) != fmt.Sprint(want) {
			t.Errorf("step %d passed on %v, want %v", i, events, s.ev)
		}
	}

	logs.Reset()
	events = nil
	failed := fmt.Errorf("%w 2 times in a row: %w", supervisor.ErrUnhealthy, refused)
	r.Changed(supervisor.Change{From: supervisor.Running, To: supervisor.Stopping, Pid: 42, Err: failed, Stopping: []string{"process group 42"}})
	s := r.Snapshot()
	if !s.Held() || s.Active() || s.Healthy() || !s.Unhealthy ||
		s.Describe() != "holding /lockex/x as /lockex/x/n (fencing token 7); workload failed its health check 2 times in a row: connection refused; stopping it" {
		t.Errorf("unhealthy: %+v %q", s, s.Describe())
	}
	if got := logs.String(); strings.Count(got, "\n") != 1 || !strings.Contains(got, `level=ERROR msg="workload unhealthy; stopping it and releasing the lock" pid=42`) ||
		!strings.Contains(got, `stopping="[process group 42]"`) {
		t.Errorf("logged %q", got)
	}
	r.HealthChecked(42, 3, refused) // the checker may report once more: dropped
	if fmt.Sprint(events) != fmt.Sprint([]Event{EvUnhealthy}) {
		t.Errorf("events %v, want the one EvUnhealthy", events)
	}
	r.Changed(supervisor.Change{From: supervisor.Stopping, To: supervisor.Released, Code: 77})
	if s := r.Snapshot(); s.Held() || s.Describe() != "released /lockex/x; workload unhealthy" {
		t.Errorf("released: %+v %q", s, s.Describe())
	}
}
