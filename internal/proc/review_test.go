package proc

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"testing"
	"time"
)

// leaveGroupEnv, set in a re-executed test binary, makes it a workload
// whose main process moves out of its own process group: it starts a
// child in a new group, joins that group, and ignores SIGTERM. Setpgid,
// unlike setsid, is open to a group leader; nothing is left in the group
// lockex made for the workload.
const leaveGroupEnv = "LOCKEX_TEST_LEAVE_GROUP"

func leaveGroup() {
	ready := os.Getenv(leaveGroupEnv)
	pid, err := syscall.ForkExec("/bin/sleep", []string{"sleep", "1000"}, &syscall.ProcAttr{
		Sys: &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL},
	})
	if err != nil {
		os.Exit(3)
	}
	if err := syscall.Setpgid(0, pid); err != nil {
		os.Exit(4)
	}
	signalIgnoreTERM()
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	if err := os.WriteFile(ready, nil, 0o644); err != nil {
		os.Exit(5)
	}
	<-usr1
	_ = os.WriteFile(ready+".usr1", nil, 0o644)
	time.Sleep(time.Hour)
	os.Exit(0)
}

// noConfinement makes r start its workloads as where lockex has neither a
// guardian nor a cgroup to put them in (a container, PID 1): only their
// process group, and the orphans handed to lockex, reach them.
func noConfinement(r *Reaper) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.confine.decided = true
}

// startLeavingGroup starts this test binary as a workload, unconfined,
// whose main process leaves its process group (leaveGroupEnv) and says
// when it has, by creating the file ready.
func startLeavingGroup(t *testing.T) (p *Process, ready string) {
	t.Helper()
	r := newReaper(t)
	noConfinement(r)
	ready = t.TempDir() + "/ready"
	t.Setenv(leaveGroupEnv, ready)
	p, err := r.Start("/proc/self/exe", []string{os.Args[0], "-test.run=^$"}, os.Environ())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.KillAll(); <-p.Gone() })
	if !within(10*time.Second, func() bool { _, err := os.Stat(ready); return err == nil }) {
		t.Fatal("the workload never got ready")
	}
	return p, ready
}

// TestMainProcessLeavesGroup (review): the workload's main process leaves
// its process group (setpgid into its child's group) and there is no
// cgroup. It still runs under the lock, and lockex knows it does: it is
// its child, not yet reaped. SignalAll must reach it, and Gone must not
// close while it runs; else the supervisor, stopping the workload after a
// loss, releases the lock with the workload running.
func TestMainProcessLeavesGroup(t *testing.T) {
	p, _ := startLeavingGroup(t)
	if st, ok := statOf(p.Pid()); !ok || st.pgrp == p.Pid() {
		t.Fatalf("the workload's main process is still in its group: %+v", st)
	}

	if signalled := p.SignalAll(syscall.SIGTERM); len(signalled) == 0 {
		t.Error("SignalAll signalled nothing; the workload's main process runs")
	}
	if p.allGone() {
		t.Error("all gone, by Gone's test, while the workload's main process runs")
	}
	select {
	case <-p.Done():
		t.Fatal("the main process ended; it ignores SIGTERM")
	default:
	}

	p.KillAll()
	select {
	case <-p.Gone():
	case <-time.After(10 * time.Second):
		t.Fatal("not gone 10s after KillAll")
	}
	select {
	case <-p.Done():
	default:
		t.Fatal("Gone closed while the main process runs")
	}
	if code := p.ExitCode(); code != 137 {
		t.Errorf("exit code %d, want 137 (SIGKILL)", code)
	}
}

func signalIgnoreTERM() { signal.Ignore(syscall.SIGTERM) }

// TestReviewWormNotGone (review): what the workload left keeps moving: each
// process starts the next and exits at once, all in the workload's process
// group, ignoring SIGTERM. A look at /proc lists pids, then reads each:
// the one listed may have exited by then and its successor not be listed.
// Gone must not close while any of them runs: whenever its test says all
// is gone, the group must have no living member. With and without the
// workload's own cgroup.
func TestReviewWormNotGone(t *testing.T) {
	for _, confined := range []bool{true, false} {
		t.Run(fmt.Sprintf("cgroup=%v", confined), func(t *testing.T) {
			r := newReaper(t)
			if !confined {
				noConfinement(r)
			}
			t.Setenv("W", `trap "" TERM; sh -c "$W" & exit 0`)
			p := sh(t, r, `trap "" TERM; sh -c "$W" & exit 0`)
			pgid := p.Pid()
			t.Cleanup(func() {
				for syscall.Kill(-pgid, syscall.SIGKILL) == nil && groupAlive(pgid) {
					time.Sleep(10 * time.Millisecond)
				}
			})
			waitDone(t, p)
			if confined && p.cgroup == "" {
				t.Log("no cgroup here; both runs are without")
			}
			p.SignalAll(syscall.SIGTERM)
			deadline := time.Now().Add(3 * time.Second)
			for polls := 1; time.Now().Before(deadline); polls++ {
				if p.allGone() {
					// Its zombies are reaped at once (the test is their
					// subreaper); a live member keeps the group for ever.
					if !within(2*time.Second, func() bool { return syscall.Kill(-pgid, 0) == syscall.ESRCH }) {
						t.Fatalf("all gone, by Gone's test, at poll %d, while the workload's group runs", polls)
					}
					t.Logf("gone at poll %d, and nothing of it runs", polls)
					return
				}
			}
		})
	}
}

// TestReviewStrayWormNotGone (review): as TestReviewWormNotGone, but each
// process of the worm starts the next in a session of its own: it left
// the workload's group, and only the orphan sweep (lockex is their
// subreaper) and the workload's cgroup, where there is one, see it. Each
// process appends a line to a file: while the file grows, it runs.
func TestReviewStrayWormNotGone(t *testing.T) {
	for _, confined := range []bool{true, false} {
		t.Run(fmt.Sprintf("cgroup=%v", confined), func(t *testing.T) {
			r := newReaper(t)
			if !confined {
				noConfinement(r)
			}
			trail := t.TempDir() + "/trail"
			t.Setenv("TRAIL", trail)
			t.Setenv("W", `trap "" TERM; echo >>"$TRAIL"; setsid sh -c "$W" & exit 0`)
			p := sh(t, r, `trap "" TERM; setsid sh -c "$W" & exit 0`)
			cg := p.cgroup
			t.Cleanup(func() {
				for range 100 {
					p.KillAll()
					if !growing(trail) {
						return
					}
				}
			})
			waitDone(t, p)
			if confined && cg == "" {
				t.Log("no cgroup here; both runs are without")
			}
			if !growing(trail) {
				t.Fatal("the worm does not run")
			}
			goneOnlyOnceStopped(t, p, trail)
		})
	}
}

// goneOnlyOnceStopped sends the worm of p, which writes to trail, the
// kill signal, and polls Gone's test for 3s as Gone would: it may find
// all gone only once nothing grows trail. Then one KillAll, as the
// supervisor sends when the grace is over, must end it all, and Gone close.
func goneOnlyOnceStopped(t *testing.T, p *Process, trail string) {
	t.Helper()
	p.SignalAll(syscall.SIGTERM)
	deadline := time.Now().Add(3 * time.Second)
	for polls := 1; time.Now().Before(deadline); polls++ {
		if p.allGone() {
			if growing(trail) {
				t.Fatalf("all gone, by Gone's test, at poll %d, while the worm runs", polls)
			}
			t.Logf("gone at poll %d, and nothing of it runs", polls)
			return
		}
	}
	p.KillAll()
	select {
	case <-p.Gone():
	case <-time.After(10 * time.Second):
		t.Fatal("not gone 10s after KillAll")
	}
	if growing(trail) {
		t.Fatal("gone after KillAll, while the worm runs")
	}
}

// growing reports whether the file at path grows within 300ms.
func growing(path string) bool {
	size := func() int64 {
		st, err := os.Stat(path)
		if err != nil {
			return 0
		}
		return st.Size()
	}
	before := size()
	return within(300*time.Millisecond, func() bool { return size() > before })
}

// TestReviewStrayWormInCgroup (review): the stray worm of
// TestReviewStrayWormNotGone where lockex is no subreaper (the default on
// a host) but the workload has a cgroup of its own: only the cgroup's
// list of processes sees the worm, and that list is read like /proc,
// one pid after another. (The test process is made a subreaper all the
// same, so that the Reaper's wait4 collects the worm's zombies and they
// do not pile up under this machine's init; the Reaper does not sweep
// them.)
func TestReviewStrayWormInCgroup(t *testing.T) {
	if err := setChildSubreaper(); err != nil {
		t.Fatal(err)
	}
	r, err := NewReaper(slog.New(slog.NewTextHandler(io.Discard, nil)), false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	if r.orphans {
		t.Fatal("the Reaper sweeps orphans")
	}
	trail := t.TempDir() + "/trail"
	t.Setenv("TRAIL", trail)
	t.Setenv("W", `trap "" TERM; echo >>"$TRAIL"; setsid sh -c "$W" & exit 0`)
	p := sh(t, r, `trap "" TERM; setsid sh -c "$W" & exit 0`)
	cg := p.cgroup
	t.Cleanup(func() {
		for range 100 {
			if cg != "" {
				_ = killCgroup(cg)
			}
			p.KillAll()
			if !growing(trail) {
				return
			}
		}
	})
	if cg == "" {
		t.Fatal("no cgroup of its own for the workload: this test needs root and a writable cgroup v2 hierarchy")
	}
	waitDone(t, p)
	if !growing(trail) {
		t.Fatal("the worm does not run")
	}
	goneOnlyOnceStopped(t, p, trail)
}

// TestReviewSignalReachesMainOutOfGroup (review): a signal lockex passes on
// (docker stop's SIGTERM, say, to lockex as PID 1) reaches the workload's
// main process when it has left its process group, as it would reach it
// without lockex in between.
func TestReviewSignalReachesMainOutOfGroup(t *testing.T) {
	p, ready := startLeavingGroup(t)
	if err := p.Signal(syscall.SIGUSR1); err != nil {
		t.Errorf("Signal: %v", err)
	}
	if !within(5*time.Second, func() bool { _, err := os.Stat(ready + ".usr1"); return err == nil }) {
		t.Error("the workload's main process never got the SIGUSR1 passed on")
	}
}
