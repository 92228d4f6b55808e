package e2e

import (
	"strings"
	"testing"
)

// TestReviewLiveTwinPID1: two live lockex, each PID 1 of a PID namespace of
// its own, with one container's identity: a user's `unshare --pid --fork`
// beside the container's lockex (kubectl exec into a container that may
// unshare), or two on one host given the same variables. The later one
// must not take the live one's node for a dead incarnation's: both would
// run their workloads at once.
func TestReviewLiveTwinPID1(t *testing.T) {
	zkc := startZK(t)
	conn := zkClient(t, zkc.Hosts())
	pod := newPod("app")
	r := newTakeoverRun(t, zkc, conn, "twin")
	first := r.start(incarnation{pid1Mode, pod}, "first", "")
	r.waitRunning("first")
	before := r.nodes()
	if len(before) != 1 {
		t.Fatalf("the first lockex's nodes: %+v, want one", before)
	}
	twin := r.start(incarnation{pid1Mode, pod}, "twin", "")
	// The look comes before the twin's own node: once that exists, any
	// deletion is done.
	r.queuedBeside(before, "the twin queued")
	if !r.exists(before[0].path) {
		t.Errorf("the live first lockex's node %s was deleted by its twin: %+v", before[0].path, r.nodes())
	}
	twinLog := stopAndLog(t, twin, pid1Mode)
	if r.running("twin") {
		t.Errorf("the twin ran its workload while the first one held the lock")
	}
	if strings.Contains(twinLog, takeoverLine) {
		t.Errorf("the twin says %q:\n%s", takeoverLine, twinLog)
	}
	// The first one is stopped at the test's end: on a deleted node it
	// may have ended already.
	_ = first
}
