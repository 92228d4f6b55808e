package proc

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// runCheckBounded runs RunCheck in the background and waits at most d for
// it: a RunCheck that does not return is a check outliving its timeout,
// and a lockex that cannot stop its health checker.
func runCheckBounded(t *testing.T, r *Reaper, ctx context.Context, d time.Duration, path string, argv []string) (code int, out []byte, returned bool, err error) {
	t.Helper()
	type result struct {
		code int
		out  []byte
		err  error
	}
	results := make(chan result, 1)
	go func() {
		code, out, err := r.RunCheck(ctx, path, argv, os.Environ())
		results <- result{code, out, err}
	}()
	select {
	case res := <-results:
		return res.code, res.out, true, res.err
	case <-time.After(d):
		return 0, nil, false, nil
	}
}

// TestReviewCheckLeavesGroup (review): the check's main process moves out
// of the process group RunCheck made for it (setpgid into its child's
// group, open to a group leader) and runs on past its timeout. Killing
// the group does not reach it; RunCheck must still kill it and return:
// else the health checker is stuck for as long as the check likes (no
// check ever fails again, so a broken holder keeps the lock), and lockex,
// which waits for the checker as it exits, hangs.
func TestReviewCheckLeavesGroup(t *testing.T) {
	r := newReaper(t)
	ready := t.TempDir() + "/ready"
	t.Setenv(leaveGroupEnv, ready)
	t.Cleanup(func() {
		// Should RunCheck have left it running.
		r.mu.Lock()
		for pid := range r.procs {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		r.mu.Unlock()
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, _, ok, err := runCheckBounded(t, r, ctx, 20*time.Second, "/proc/self/exe", []string{os.Args[0], "-test.run=^$"})
	if _, statErr := os.Stat(ready); statErr != nil {
		t.Fatalf("the check never left its group (%v); RunCheck: %v", statErr, err)
	}
	if !ok {
		t.Fatal("RunCheck has not returned 20s after it began, 19s past the check's timeout")
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("check past its timeout: %v, want the deadline", err)
	}
}

// TestReviewCheckStoppedByJobControl (review): a check that stops itself
// (SIGSTOP, as job control would) is killed at its timeout all the same,
// and its stop is not taken for its end.
func TestReviewCheckStoppedByJobControl(t *testing.T) {
	r := newReaper(t)
	pidFile := filepath.Join(t.TempDir(), "pid")
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	_, _, ok, err := runCheckBounded(t, r, ctx, 20*time.Second, "/bin/sh", []string{"sh", "-c", "echo $$ > " + pidFile + "; kill -STOP $$; exit 0"})
	if !ok {
		t.Fatal("RunCheck has not returned 20s after it began")
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("stopped check: %v, want the deadline", err)
	}
	for _, pid := range readPids(t, pidFile) {
		waitGone(t, pid)
	}
}

// TestReviewCheckDaemonIsStopped (review): as PID 1 or a subreaper, a
// check that starts a daemon (setsid) and exits passes; its daemon, handed
// to lockex, is documented (design.md §4.4) as an orphan of the workload
// at its next stop: it must then be stopped with it, and the stop must
// end, not wait for it for ever.
func TestReviewCheckDaemonIsStopped(t *testing.T) {
	r := newReaper(t)
	noConfinement(r)
	w := sh(t, r, "exec sleep 1000")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	code, out, ok, err := runCheckBounded(t, r, ctx, 20*time.Second, "/bin/sh", []string{"sh", "-c", "setsid sleep 1000 >/dev/null 2>&1 & echo $!"})
	if !ok || err != nil || code != 0 {
		t.Fatalf("check: %d %q %v", code, out, err)
	}
	daemon, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatalf("output %q", out)
	}
	t.Cleanup(func() { _ = syscall.Kill(daemon, syscall.SIGKILL) })
	w.SignalAll(syscall.SIGTERM)
	select {
	case <-w.Gone():
	case <-time.After(20 * time.Second):
		t.Fatal("the workload's stop never ended")
	}
	waitGone(t, daemon)
}

// TestReviewCheckLeaksNoFds (review): a health check runs every period
// for as long as lockex holds, days on end. Checks that pass, fail and
// time out must not leave descriptors (pipe, /dev/null, pidfd) or
// goroutines behind, or lockex runs out of them while it holds the lock.
func TestReviewCheckLeaksNoFds(t *testing.T) {
	r := newReaper(t)
	count := func() (fds, goroutines int) {
		entries, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			t.Fatal(err)
		}
		return len(entries), runtime.NumGoroutine()
	}
	run := func() {
		for _, script := range []string{"exit 0", "echo no; exit 1", "sleep 10"} {
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			_, _, _, _ = runCheckBounded(t, r, ctx, 20*time.Second, "/bin/sh", []string{"sh", "-c", script})
			cancel()
		}
	}
	run() // the first checks start what lives as long as the reaper
	fds0, g0 := count()
	for range 30 {
		run()
	}
	if !within(10*time.Second, func() bool { fds, g := count(); return fds <= fds0 && g <= g0+2 }) {
		fds, g := count()
		t.Errorf("after 90 checks: %d descriptors (from %d), %d goroutines (from %d)", fds, fds0, g, g0)
	}
}
