package e2e

import (
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// flappingStandby runs contenders that requeue round after round, each
// with a standby check that fails one time in three, and a threshold of 1:
// every failure while queued leaves the queue, so leaves race grants,
// --locktimeout (the odd ones have -t) and releases all the time. Never
// more than size run at once; TERM ends every one promptly; nothing is
// left in ZooKeeper.
func flappingStandby(t *testing.T, id string, size, contenders int) {
	zkc := startZK(t)
	conn := zkClient(t, zkc.Hosts())
	dir := t.TempDir()
	logPath := filepath.Join(dir, "holders.log")
	var all []*started
	for i := range contenders {
		who := fmt.Sprintf("c%d", i)
		checks := filepath.Join(dir, who+".checks")
		check := `sh -c 'echo x >> ` + checks + `; test $(( $(od -An -N1 -tu1 /dev/urandom) % 3 )) -ne 0'`
		args := []string{"-z", zkc.Hosts(), "-i", id, "-c", fmt.Sprint(size), "--requeue",
			"--requeue-backoff", "10ms", "--requeue-backoff-max", "20ms",
			"--standby-cmd", check, "--health-period", "30ms", "--health-timeout", "5s", "--health-failure-threshold", "1"}
		if i%2 == 1 {
			args = append(args, "-t", "0.3")
		}
		all = append(all, startLockex(t, nil, append(append(args, "--"), stoppableRecorder(logPath, who, 50*time.Millisecond)...)...))
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
		for i, s := range all {
			select {
			case <-s.done:
				t.Fatalf("lockex %d ended (%d) while it requeues:\n%s", i, s.code, s.stderr)
			default:
			}
		}
	}
	for _, s := range all {
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
	}
	left := 0
	for i, s := range all {
		// 143 between rounds or while waiting, 0 from the workload's trap;
		// a TERM found queued as a round ends counts for that round
		// (docs/design.md §4.5), so one with -t may end with its round's 75.
		code := s.wait(t, 10*time.Second)
		if code != 143 && code != 0 && (code != 75 || i%2 == 0) {
			t.Errorf("lockex %d: exit %d, want 143 or 0 (or 75 with -t); log:\n%s", i, code, s.stderr)
		}
		left += strings.Count(s.stderr.String(), "standby check failed; left the queue")
	}
	ivs := readIntervals(t, logPath)
	t.Logf("%d runs, %d leaves", len(ivs), left)
	if n := maxOverlap(ivs); n > size {
		t.Errorf("%d runs at once, at most %d allowed", n, size)
	}
	if left == 0 || len(ivs) == 0 {
		t.Errorf("%d leaves, %d runs: the stress did not stress", left, len(ivs))
	}
	for _, p := range []string{"/lockex/" + id, "/lockex/" + id + "-__lock__"} {
		if kids := children(t, conn, p); len(kids) != 0 {
			t.Errorf("%s: nodes left: %v", p, kids)
		}
	}
}

func TestReviewStandbyFlappingMutex(t *testing.T) { flappingStandby(t, "flap-mutex", 1, 4) }

func TestReviewStandbyFlappingSemaphore(t *testing.T) { flappingStandby(t, "flap-sem", 2, 5) }

// TestReviewStandbyRejoinKeepsIdentity: a standby that is PID 1 of its
// container, with its pod's identity, writes that identity into its node,
// so that its next incarnation, after a crash, deletes the node at once
// (docs/design.md §3.4). Leaving the queue for its check replaces its
// session (§4.7); the node it queues with again is the same lockex's and
// must carry the same identity, and nothing may say that another live
// lockex has it: the claim on the identity is this lockex's own.
func TestReviewStandbyRejoinKeepsIdentity(t *testing.T) {
	zkc := startZK(t)
	conn := zkClient(t, zkc.Hosts())
	const id = "standby-identity"
	r := newTakeoverRun(t, zkc, conn, id)
	s := newStandbyTest(t)
	a := s.holderOf(zkc.Hosts(), id, "a-done")
	pod := newPod("app")
	s.touch("b-fit")
	args := append(append([]string{"-z", zkc.Hosts(), "-i", id}, s.flags("b-fit")...), append([]string{"--"}, s.waitFor("b-done")...)...)
	b := pid1Mode.start(t, pod.env(), args...)
	eventually(t, 15*time.Second, "b queues with its pod's identity", func() bool { return len(r.nodesOf(pod)) == 1 })
	first := r.nodesOf(pod)[0]

	s.remove("b-fit")
	eventually(t, 15*time.Second, "b leaves the queue", func() bool { return len(r.nodes()) == 1 })
	s.touch("b-fit")
	eventually(t, 15*time.Second, "b queues again", func() bool { return len(r.nodes()) == 2 })
	kids, _ := lockStat(t, conn, "/lockex/"+id) // a's, then b's
	again, _, err := conn.Get("/lockex/" + id + "/" + kids[1])
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(again), " uid="+pod.uid+" ") {
		t.Errorf("b's node after it queued again is %q, without its pod's uid %s (the first was %q): a crash of b would leave it for its session's expiry", again, pod.uid, first.data)
	}
	if line := "another live lockex may have this container's identity"; strings.Contains(b.stderr.String(), line) {
		t.Errorf("b's log says %q of its own claim:\n%s", line, b.stderr)
	}
	s.touch("a-done")
	s.touch("b-done")
	a.wait(t, 15*time.Second)
	if code := b.wait(t, 15*time.Second); code != 0 {
		t.Fatalf("b: exit %d:\n%s", code, b.stderr)
	}
}
