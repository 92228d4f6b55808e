package proc

import (
	"os"
	"strconv"
	"syscall"
	"testing"
)

// lowestFreeFd is the descriptor the next open would get.
func lowestFreeFd(t *testing.T) uint64 {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	open := map[int]bool{}
	for _, e := range entries {
		if fd, err := strconv.Atoi(e.Name()); err == nil {
			open[fd] = true
		}
	}
	fd := 0
	for open[fd] {
		fd++
	}
	return uint64(fd)
}

// TestReviewPrepareFailureIsFinal: Prepare runs as lockex starts waiting,
// possibly hours before the handoff. If the guardian cannot start at that
// moment for a passing reason (here: descriptors exhausted, EMFILE; in a
// pod, pids.max or RLIMIT_NPROC reached as the containers start), the
// decision is kept: at the handoff, when it could start, Start forks the
// workload without one, and a SIGKILL of lockex (the OOM killer, under the
// very pressure that made the first try fail) leaves the workload's
// background children running beside the next holder. Before Prepare the
// one try was at the handoff; a guardian that exits early is restarted up
// to ten times, but one that failed to start is never tried again.
func TestReviewPrepareFailureIsFinal(t *testing.T) {
	r := newReaper(t)
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	tight := lim
	tight.Cur = lowestFreeFd(t)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &tight); err != nil {
		t.Fatal(err)
	}
	r.Prepare()
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	prepErr := r.confine.err
	r.mu.Unlock()
	if prepErr == nil {
		t.Fatal("the guardian started with no descriptor free: the test's premise failed")
	}
	t.Logf("Prepare: %v", prepErr)

	dir := t.TempDir()
	t.Setenv("D", dir)
	p := sh(t, r, `sleep 1000 & echo $! > "$D/bg"
exec sleep 1000`)
	bg := readPid(t, dir+"/bg")
	t.Cleanup(func() { _ = syscall.Kill(-p.Pid(), syscall.SIGKILL) })
	r.mu.Lock()
	g := r.confine.guard
	r.mu.Unlock()
	if g == nil {
		t.Fatalf("the workload (pid %d, background child %d) was started without a guardian, "+
			"though one could start now; Prepare's failure (%v) was taken as final", p.Pid(), bg, prepErr)
	}
	lockexDiesWith(t, r, p, bg)
}
