package status

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/lockex/lockex/internal/supervisor"
)

// TestStandbyChecked: a standby's checks update the snapshot while they
// decide (checking, waiting), each failure is counted as an event, and
// only the changes of state are logged; leaving the queue counts, shows
// the session being replaced, and a new round starts afresh. A result
// that comes once the lock is held, or of another round, is dropped.
func TestStandbyChecked(t *testing.T) {
	var logs bytes.Buffer
	var events []Event
	r := New(slog.New(slog.NewTextHandler(&logs, nil)), "/lockex/x", 1, func(ev Event, _ Snapshot) { events = append(events, ev) })
	r.StandbyCheckWith("exec test -f /ready", 2)
	r.Changed(supervisor.Change{From: supervisor.Starting, To: supervisor.Connecting, Round: 1})
	r.Connected("zk:2181", 1, 0)
	logs.Reset()
	r.Changed(supervisor.Change{From: supervisor.Connecting, To: supervisor.Checking})
	notFit := errors.New("exec test -f /ready: exit 1")
	events = nil
	r.StandbyChecked(1, false, 1, notFit)
	r.StandbyChecked(1, false, 2, notFit)
	s := r.Snapshot()
	if s.StandbyOK || s.StandbyFit || s.StandbyFailures != 2 || s.StandbyErr != notFit.Error() || s.StandbyReady() {
		t.Errorf("after two failures: %+v", s)
	}
	if d := s.Describe(); d != "checking this standby before it queues for /lockex/x (failed 2 in a row: exec test -f /ready: exit 1)" {
		t.Errorf("described as %q", d)
	}
	if fmt.Sprint(events) != fmt.Sprint([]Event{EvStandbyFailed, EvStandbyFailed}) {
		t.Errorf("events %v, want two failed checks", events)
	}
	r.StandbyChecked(1, true, 0, nil)
	r.Changed(supervisor.Change{From: supervisor.Checking, To: supervisor.Waiting})
	if s := r.Snapshot(); !s.StandbyOK || !s.StandbyFit || s.StandbyFailures != 0 || s.StandbyErr != "" || !s.StandbyReady() {
		t.Errorf("after a pass, queued: %+v", s)
	}
	r.StandbyChecked(1, false, 2, notFit)
	left := fmt.Errorf("%w 2 times in a row: %w", supervisor.ErrStandbyUnfit, notFit)
	r.Changed(supervisor.Change{From: supervisor.Waiting, To: supervisor.Connecting, Round: 1, Err: left})
	if s := r.Snapshot(); s.StandbyFit || s.StandbyLeft != 1 || s.StandbyLeftErr != left.Error() || s.Connected || s.StandbyReady() {
		t.Errorf("after leaving the queue: %+v", s)
	}
	got := logs.String()
	for _, line := range []string{"checking this standby before it queues", "standby check passed; queueing for the lock", "standby check failed; left the queue"} {
		if strings.Count(got, "msg=\""+line) != 1 {
			t.Errorf("want one %q line in:\n%s", line, got)
		}
	}
	if n := strings.Count(got, "\n"); n != 3 {
		t.Errorf("%d lines, want 3, one per change:\n%s", n, got)
	}

	r.Changed(supervisor.Change{From: supervisor.Connecting, To: supervisor.Checking})
	r.StandbyChecked(1, true, 0, nil)
	r.Changed(supervisor.Change{From: supervisor.Checking, To: supervisor.Waiting})
	r.Changed(supervisor.Change{From: supervisor.Waiting, To: supervisor.Holding, Node: "/lockex/x/n", Token: 3})
	r.StandbyChecked(1, false, 1, notFit) // in flight as the lock came
	if s := r.Snapshot(); !s.StandbyFit || s.StandbyErr != "" || s.StandbyReady() {
		t.Errorf("holding: %+v, want the result dropped and not ready (the check no longer decides)", s)
	}
	r.Changed(supervisor.Change{From: supervisor.Holding, To: supervisor.Released})
	r.Changed(supervisor.Change{From: supervisor.Released, To: supervisor.Backoff, Round: 2})
	r.Changed(supervisor.Change{From: supervisor.Backoff, To: supervisor.Connecting, Round: 2})
	r.StandbyChecked(1, true, 0, nil) // of the last round
	if s := r.Snapshot(); s.StandbyOK || s.StandbyFit || s.StandbyLeft != 1 {
		t.Errorf("a new round: %+v, want checked afresh, the leaves of the run kept", s)
	}
}
