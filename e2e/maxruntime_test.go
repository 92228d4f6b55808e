package e2e

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMaxRuntime: a cron job that would run for a minute is stopped at
// --max-runtime; lockex exits 124 (as timeout(1)), its node is gone, and
// the next in line, queued meanwhile, runs.
func TestMaxRuntime(t *testing.T) {
	zk := startZK(t)
	conn := zkClient(t, zk.Hosts())
	const id = "maxruntime"
	started := time.Now()
	a := startLockex(t, nil, "-z", zk.Hosts(), "-i", id, "--max-runtime", "1s", "--", "sleep", "60")
	eventually(t, 10*time.Second, "a holds the lock", func() bool { return len(children(t, conn, "/lockex/"+id)) == 1 })
	b := startLockex(t, nil, "-z", zk.Hosts(), "-i", id, "--", "true")
	if code := a.wait(t, 30*time.Second); code != 124 {
		t.Fatalf("exit %d, want 124; log:\n%s", code, a.stderr)
	}
	if took := time.Since(started); took < time.Second {
		t.Errorf("stopped after %s, before --max-runtime 1s", took)
	}
	for _, say := range []string{"stopping the workload", "--max-runtime 1s", "lock released", "code=124"} {
		if !strings.Contains(a.stderr.String(), say) {
			t.Errorf("log does not say %q:\n%s", say, a.stderr)
		}
	}
	if code := b.wait(t, 30*time.Second); code != 0 {
		t.Fatalf("the next in line: exit %d, want 0; log:\n%s", code, b.stderr)
	}
	if kids := children(t, conn, "/lockex/"+id); len(kids) != 0 {
		t.Errorf("nodes left: %v", kids)
	}
}

// TestMaxRuntimeIgnoredTERM: a workload that ignores SIGTERM is stopped
// with SIGKILL after --kill-grace. While it is being stopped lockex holds
// the lock, is not active, counts the stop, and a SIGTERM to lockex
// neither releases the lock early nor changes the code.
func TestMaxRuntimeIgnoredTERM(t *testing.T) {
	zk := startZK(t)
	conn := zkClient(t, zk.Hosts())
	const id = "maxruntime-term"
	const lock = "/lockex/" + id
	pidFile := filepath.Join(t.TempDir(), "pid")
	// An ignored signal stays ignored across exec: sleep ignores it too.
	a := startObserved(t, nil, "-z", zk.Hosts(), "-i", id, "--max-runtime", "1s",
		"--session-timeout", "20s", "--kill-grace", "10s",
		"--", "sh", "-c", `trap "" TERM; echo $$ > `+pidFile+`; exec sleep 60`)
	eventually(t, 10*time.Second, "the workload runs", func() bool { code, _ := a.get(t, "/active"); return code == 200 })
	check(t, a.metrics(t), lock, map[string]want{"lockex_workload_max_runtime_exceeded_total": counter(0)})
	eventually(t, 10*time.Second, "the stop began", func() bool {
		return strings.Contains(a.stderr.String(), `"msg":"stopping the workload"`)
	})
	// The grace is 10s: what follows happens within it.
	a.probes(t, 200, 200, 503)
	if _, body := a.get(t, "/readyz"); !strings.Contains(body, "stopping the workload (max runtime passed") {
		t.Errorf("/readyz says %q", body)
	}
	check(t, a.metrics(t), lock, map[string]want{
		"lockex_workload_max_runtime_exceeded_total": counter(1),
		"lockex_lock_held":                           gauge(1),
		"lockex_workload_running":                    gauge(0),
		"lockex_workload_ready":                      gauge(0),
	})
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	if kids := children(t, conn, lock); len(kids) != 1 {
		t.Errorf("nodes %v after a SIGTERM during the stop, want the holder's", kids)
	}
	if code := a.wait(t, 30*time.Second); code != 124 {
		t.Fatalf("exit %d, want 124; log:\n%s", code, a.stderr)
	}
	if !strings.Contains(a.stderr.String(), "still running after the grace; sent SIGKILL") {
		t.Errorf("no SIGKILL after the grace in:\n%s", a.stderr)
	}
	if strings.Contains(a.stderr.String(), "forwarded signal") {
		t.Errorf("a signal during the stop was forwarded:\n%s", a.stderr)
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if err := syscall.Kill(pid, 0); err != syscall.ESRCH {
		t.Errorf("the workload (pid %d) outlived lockex: kill 0 says %v", pid, err)
	}
	if kids := children(t, conn, lock); len(kids) != 0 {
		t.Errorf("nodes left: %v", kids)
	}
	checkLog(t, a.started, lock, map[string][]string{
		"stopping the workload": {"reason", "stopping"},
		"lock released":         {"code"},
	})
}

// TestMaxRuntimeSemaphore: with -c 2 each lease holder has its own limit,
// and its lease goes when it is stopped.
func TestMaxRuntimeSemaphore(t *testing.T) {
	zk := startZK(t)
	conn := zkClient(t, zk.Hosts())
	const id = "maxruntime-sem"
	a := startLockex(t, nil, "-z", zk.Hosts(), "-i", id, "-c", "2", "--max-runtime", "1s", "--", "sleep", "60")
	b := startLockex(t, nil, "-z", zk.Hosts(), "-i", id, "-c", "2", "--", "sleep", "60")
	eventually(t, 10*time.Second, "both hold a lease", func() bool { return len(children(t, conn, "/lockex/"+id)) == 2 })
	if code := a.wait(t, 30*time.Second); code != 124 {
		t.Fatalf("exit %d, want 124; log:\n%s", code, a.stderr)
	}
	if kids := children(t, conn, "/lockex/"+id); len(kids) != 1 {
		t.Errorf("leases %v, want b's alone", kids)
	}
	_ = b.cmd.Process.Signal(syscall.SIGTERM)
	if code := b.wait(t, 10*time.Second); code != 143 {
		t.Errorf("b: exit %d, want 143", code)
	}
}

// TestMaxRuntimeWithMinHold: a limit shorter than --min-hold stops the
// workload at the limit, and the lock is still kept until --min-hold has
// passed.
func TestMaxRuntimeWithMinHold(t *testing.T) {
	zk := startZK(t)
	conn := zkClient(t, zk.Hosts())
	const id = "maxruntime-minhold"
	pidFile := filepath.Join(t.TempDir(), "pid")
	started := time.Now()
	a := startLockex(t, nil, "-z", zk.Hosts(), "-i", id, "--max-runtime", "0.5", "--min-hold", "3",
		"--", "sh", "-c", "echo $$ > "+pidFile+"; exec sleep 60")
	eventually(t, 10*time.Second, "the stop began", func() bool { return strings.Contains(a.stderr.String(), "stopping the workload") })
	if !strings.Contains(a.stderr.String(), "min_hold_remaining") {
		t.Errorf("the stop does not say how long the lock is kept:\n%s", a.stderr)
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	eventually(t, 10*time.Second, "the workload is gone", func() bool { return syscall.Kill(pid, 0) == syscall.ESRCH })
	select {
	case <-a.done:
		if time.Since(started) < 3*time.Second {
			t.Fatalf("exited %d before --min-hold passed; log:\n%s", a.code, a.stderr)
		}
	default:
		if kids := children(t, conn, "/lockex/"+id); len(kids) != 1 {
			t.Errorf("nodes %v while --min-hold lasts, want the holder's", kids)
		}
	}
	if code := a.wait(t, 20*time.Second); code != 124 {
		t.Fatalf("exit %d, want 124; log:\n%s", code, a.stderr)
	}
	if took := time.Since(started); took < 3*time.Second {
		t.Errorf("released after %s, before --min-hold 3s", took)
	}
	if kids := children(t, conn, "/lockex/"+id); len(kids) != 0 {
		t.Errorf("nodes left: %v", kids)
	}
}
