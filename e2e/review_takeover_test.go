package e2e

import (
	"strings"
	"syscall"
	"testing"
)

// TestReviewLiveTwinPID1: two live lockex, each PID 1 of a PID namespace of
// its own, with one container's identity: a user's `unshare --pid --fork`
// beside the container's lockex (kubectl exec into a container that may
// unshare), or two on one host given the same variables; or the first one
// frozen (SIGSTOP, a paused container) as a runtime starts the second. The
// later one must not take the live one's node for a dead incarnation's:
// both would run their workloads at once.
func TestReviewLiveTwinPID1(t *testing.T) {
	zkc := startZK(t)
	conn := zkClient(t, zkc.Hosts())
	for _, frozen := range []bool{false, true} {
		t.Run(map[bool]string{false: "live", true: "frozen"}[frozen], func(t *testing.T) {
			pod := newPod("app")
			r := newTakeoverRun(t, zkc, conn, "twin-"+t.Name()[len("TestReviewLiveTwinPID1/"):])
			first := r.start(incarnation{pid1Mode, pod}, "first", "")
			r.waitRunning("first")
			before := r.nodes()
			if len(before) != 1 {
				t.Fatalf("the first lockex's nodes: %+v, want one", before)
			}
			if frozen {
				pid := first.lockexPid(t, pid1Mode)
				if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
					t.Fatal(err)
				}
				defer syscall.Kill(pid, syscall.SIGCONT)
			}
			twin := r.start(incarnation{pid1Mode, pod}, "twin", "")
			// The look comes before the twin's own node: once that
			// exists, any deletion is done.
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
			// The first one is stopped at the test's end: on a deleted
			// node it may have ended already.
		})
	}
}

// TestReviewTwinThenRestart: a twin that could not claim the identity
// queues behind the first lockex; the first crashes and restarts. The
// restarted one takes over its dead node, but the live twin's node, which
// names the same container, stays: the twin is next in line and runs.
func TestReviewTwinThenRestart(t *testing.T) {
	zkc := startZK(t)
	conn := zkClient(t, zkc.Hosts())
	pod := newPod("app")
	r := newTakeoverRun(t, zkc, conn, "twin-restart")
	first := r.start(incarnation{pid1Mode, pod}, "first", "")
	r.waitRunning("first")
	before := r.nodes()
	twin := r.start(incarnation{pid1Mode, pod}, "twin", "")
	r.queuedBeside(before, "the twin queued")
	queued := r.nodes()
	crash(t, first)
	restarted := r.start(incarnation{pid1Mode, pod}, "restarted", "")
	r.waitRunning("twin")
	for _, n := range queued {
		if n.path != before[0].path && !r.exists(n.path) {
			t.Errorf("the live twin's node %s (%q) was deleted", n.path, n.data)
		}
	}
	if r.exists(before[0].path) {
		t.Errorf("the crashed lockex's node %s is still there", before[0].path)
	}
	if r.running("restarted") {
		t.Errorf("the restarted lockex runs beside the twin")
	}
	stopAndLog(t, restarted, pid1Mode)
	stopAndLog(t, twin, pid1Mode)
}
