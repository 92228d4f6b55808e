package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestReviewWormOutlivesNoLock (review): lockex on a host whose cgroup
// hierarchy it may not write (read-only, as in a container), with
// --subreaper, its workload leaving behind a chain of processes, each in
// a session of its own, each starting the next and exiting at once, each
// ignoring SIGTERM and appending a record. Only the orphan sweep sees
// them. The next holder waits. Nothing of the first may write once the
// next has started: lockex must not release the lock while the chain
// runs (nor exit: its guardian kills only the workload's group).
func TestReviewWormOutlivesNoLock(t *testing.T) {
	zk := startZK(t)
	logPath := filepath.Join(t.TempDir(), "log")
	worm := fmt.Sprintf(`trap "" TERM; echo "tick $(date +%%s%%N) a $LOCKEX_FENCING_TOKEN" >> %s; setsid sh -c "$W" & exit 0`, logPath)
	args := append([]string{"-m", "--propagation", "private", "sh", "-c",
		`mount -o remount,bind,ro /sys/fs/cgroup/unified && exec "$0" "$@"`, lockexBin, "--subreaper"},
		append(lossArgs(zk.Hosts(), "worm", nil), "sh", "-c", worm)...)
	a := startCommand(t, []string{"W=" + worm}, "unshare", args...)
	t.Cleanup(func() {
		// What the chain left, if lockex let it go: it records, so stop it.
		// By pid: the processes whose command line names this test's log.
		for range 100 {
			entries, _ := os.ReadDir("/proc")
			for _, e := range entries {
				pid, err := strconv.Atoi(e.Name())
				if err != nil {
					continue
				}
				if cmdline, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline"); strings.Contains(string(cmdline), logPath) {
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			}
			if !growing(logPath) {
				return
			}
		}
	})
	waitRecord(t, logPath, "a")
	b := startLockex(t, nil, lossArgs(zk.Hosts(), "worm", ticker(logPath, "b", time.Second, false))...)
	if code := b.wait(t, 30*time.Second); code != 0 {
		t.Fatalf("b exit %d; log:\n%s", code, b.stderr)
	}
	a.wait(t, 10*time.Second)
	if !strings.Contains(a.stderr.String(), "no cgroup of its own") {
		t.Errorf("the workload had a cgroup; log:\n%s", a.stderr)
	}
	mustBeOneAtATime(t, logPath)
}

// growing reports whether the file at path grows within 300ms.
func growing(path string) bool {
	st, _ := os.Stat(path)
	var before int64
	if st != nil {
		before = st.Size()
	}
	time.Sleep(300 * time.Millisecond)
	st, _ = os.Stat(path)
	return st != nil && st.Size() > before
}
