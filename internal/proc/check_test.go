package proc

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func runCheck(t *testing.T, r *Reaper, ctx context.Context, script string) (int, string, error) {
	t.Helper()
	code, out, err := r.RunCheck(ctx, "/bin/sh", []string{"sh", "-c", script}, os.Environ())
	return code, string(out), err
}

// gone reports whether pid no longer runs: it does not exist, or is a
// zombie for its parent to reap.
func gone(pid int) bool {
	st, ok := statOf(pid)
	return !ok || st.state == 'Z' || st.state == 'X'
}

func waitGone(t *testing.T, pid int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !gone(pid); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("pid %d still runs", pid)
		}
	}
}

// TestRunCheck: the exit code and the output come back; the reaper, which
// collects every child, hands the check's status to RunCheck.
func TestRunCheck(t *testing.T) {
	r := newReaper(t)
	for _, tc := range []struct {
		script string
		code   int
		out    string
	}{
		{"echo fine", 0, "fine\n"},
		{"echo to stderr >&2; exit 3", 3, "to stderr\n"},
		{"kill -TERM $$", 128 + int(syscall.SIGTERM), ""},
		{"head -c 100000 /dev/zero | tr '\\0' x", 0, strings.Repeat("x", CheckOutputMax)},
	} {
		code, out, err := runCheck(t, r, context.Background(), tc.script)
		if err != nil || code != tc.code || out != tc.out {
			t.Errorf("%s: code %d, output %.40q, %v; want %d, %.40q", tc.script, code, out, err, tc.code, tc.out)
		}
	}
	if _, _, err := r.RunCheck(context.Background(), "/nonexistent/check", []string{"check"}, nil); err == nil || !strings.Contains(err.Error(), "/nonexistent/check") {
		t.Errorf("missing command: %v", err)
	}
}

// TestRunCheckLeavesNothing: a check that outlives its timeout is killed
// with everything in its group, and what a check that ended left in its
// group is killed too, also when it holds the output pipe.
func TestRunCheckLeavesNothing(t *testing.T) {
	r := newReaper(t)
	dir := t.TempDir()
	pids := filepath.Join(dir, "pids")

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, _, err := runCheck(t, r, ctx, "sleep 1000 & echo $! > "+pids+"; echo $$ >> "+pids+"; wait")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("hanging check: %v, want the deadline", err)
	}
	for _, pid := range readPids(t, pids) {
		waitGone(t, pid)
	}

	// Bounded: should the leftover not be killed, it would hold the
	// output open until the deadline, and be found running after it.
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	code, out, err := runCheck(t, r, ctx, "sleep 1000 & echo $!")
	if err != nil || code != 0 {
		t.Fatalf("check that leaves a child: %d, %v", code, err)
	}
	child, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil {
		t.Fatalf("output %q", out)
	}
	waitGone(t, child)
}

func readPids(t *testing.T, path string) []int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			t.Fatal(err)
		}
		pids = append(pids, pid)
	}
	if len(pids) == 0 {
		t.Fatalf("no pids in %s", path)
	}
	return pids
}

// TestCheckIsNotTheWorkload: a check that runs while the workload is
// stopped is not among what the stop signals, and does not hold the stop
// up; the workload's exit does not end the check.
func TestCheckIsNotTheWorkload(t *testing.T) {
	r := newReaper(t)
	dir := t.TempDir()
	marker := filepath.Join(dir, "check")
	w := sh(t, r, "sleep 100")

	ctx, cancel := context.WithCancel(context.Background())
	ended := make(chan error, 1)
	go func() {
		_, _, err := runCheck(t, r, ctx, "echo $$ > "+marker+".tmp; mv "+marker+".tmp "+marker+"; exec sleep 100")
		ended <- err
	}()
	var check int
	for deadline := time.Now().Add(10 * time.Second); check == 0; time.Sleep(10 * time.Millisecond) {
		if b, err := os.ReadFile(marker); err == nil {
			check, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		}
		if time.Now().After(deadline) {
			t.Fatal("the check did not start")
		}
	}

	killed := w.KillAll()
	for _, k := range killed {
		if strings.Contains(k, strconv.Itoa(check)) {
			t.Errorf("the workload's stop signalled the check: %q", killed)
		}
	}
	select {
	case <-w.Gone():
	case <-time.After(10 * time.Second):
		t.Fatal("the workload's stop waits for the check")
	}
	if gone(check) {
		t.Fatal("the check was killed with the workload")
	}
	select {
	case err := <-ended:
		t.Fatalf("the check ended with the workload: %v", err)
	default:
	}
	cancel()
	if err := <-ended; !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled check: %v", err)
	}
	waitGone(t, check)
}
