package proc

import (
	"slices"
	"testing"
	"time"
)

// TestReviewReaperForgetsEndedRounds (review of --requeue): one Reaper
// serves every round of a lockex that may run for months. A workload that
// is all gone must not be kept: rounds restarted every second would
// otherwise keep a Process, its channels and its pidfd's file for each
// round, for ever.
func TestReviewReaperForgetsEndedRounds(t *testing.T) {
	r := newReaper(t)
	var ended []*Process
	for range 5 {
		p := sh(t, r, "sleep 0.01 & exit 0")
		waitDone(t, p)
		p.SignalAll(15)
		select {
		case <-p.Gone():
		case <-time.After(10 * time.Second):
			t.Fatalf("pid %d: what it started is not gone", p.Pid())
		}
		ended = append(ended, p)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range ended {
		if slices.Contains(r.started, p) || r.procs[p.pid] == p {
			t.Errorf("the Reaper still keeps workload %d, all gone, among %d", p.pid, len(r.started))
		}
	}
}
