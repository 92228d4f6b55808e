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

// These tests look for what a workload can leave running past lockex's
// release of the lock. lockex must stop all of it itself before the
// release: its guardian acts only as lockex exits, after the release, and
// here it is frozen so that it cannot hide what lockex missed.

// freezeGuardians freezes lockex's guardians until the test ends, in a
// cgroup v2 of their own. SIGSTOP would not do: as lockex exits, the
// guardian's process group is orphaned, and the kernel continues it.
func freezeGuardians(t *testing.T, lockexPid int) []int {
	t.Helper()
	guards, _ := lockexChildren(lockexPid)
	if len(guards) == 0 {
		t.Fatalf("lockex %d has no guardian", lockexPid)
	}
	mnt := cgroup2Mount(t)
	freezer, err := os.MkdirTemp(mnt, "escape-test-freezer-")
	if err != nil {
		t.Fatal(err)
	}
	home := map[int]string{}
	for _, g := range guards {
		home[g] = cgroupOf(g)
	}
	t.Cleanup(func() {
		_ = os.WriteFile(freezer+"/cgroup.freeze", []byte("0"), 0)
		for g, cg := range home {
			_ = os.WriteFile(mnt+cg+"/cgroup.procs", []byte(strconv.Itoa(g)), 0)
		}
		for deadline := time.Now().Add(5 * time.Second); syscall.Rmdir(freezer) == syscall.EBUSY && time.Now().Before(deadline); {
			time.Sleep(20 * time.Millisecond)
		}
	})
	for _, g := range guards {
		if err := os.WriteFile(freezer+"/cgroup.procs", []byte(strconv.Itoa(g)), 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(freezer+"/cgroup.freeze", []byte("1"), 0); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the guardian is frozen", func() bool {
		b, _ := os.ReadFile(freezer + "/cgroup.events")
		return strings.Contains(string(b), "frozen 1")
	})
	return guards
}

// threadsRun reports whether a thread of process pid still runs. A
// process whose main thread has exited shows as a zombie in
// /proc/PID/stat while its other threads run on.
func threadsRun(pid int) bool {
	tasks, _ := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/task")
	for _, task := range tasks {
		tid, _ := strconv.Atoi(task.Name())
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/task/" + strconv.Itoa(tid) + "/stat")
		if err != nil {
			continue
		}
		s := string(b)
		if f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:]); len(f) > 0 && f[0] != "Z" && f[0] != "X" {
			return true
		}
	}
	return false
}

// ticksAfter counts the lines of the ticks file at path at or after ns.
func ticksAfter(t *testing.T, path string, ns int64) (after int, last int64) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Fields(string(b)) {
		tick, _ := strconv.ParseInt(line, 10, 64)
		if tick >= ns {
			after++
			last = max(last, tick)
		}
	}
	return after, last
}

// escape runs a workload that leaves leftover behind (its pid in $D/bg,
// ticking into $D/ticks) and exits once told, while a next contender
// waits, with lockex's guardian frozen. It checks that the leftover is
// gone when lockex has released the lock and exited, and that it never
// ticked once the next holder had started. It returns the cgroup the
// leftover was in.
func escape(t *testing.T, c confinement, leftover string, running func(pid int) bool) (cgroup string) {
	zk := startZK(t)
	conn := zkClient(t, zk.Hosts())
	dir := t.TempDir()
	env := []string{"D=" + dir, "CG2=" + cgroup2Mount(t)}
	id := "escape"
	first := c.start(t, env, false, "-z", zk.Hosts(), "-i", id, "--kill-grace", "500ms", "--",
		"sh", "-c", leftover+`
while [ ! -e "$D/go" ]; do sleep 0.01; done`)
	bg, err := strconv.Atoi(waitFile(t, filepath.Join(dir, "bg")))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Kill(bg, syscall.SIGKILL) })
	waitFile(t, filepath.Join(dir, "ticks"))
	cgroup = cgroupOf(bg)
	t.Logf("leftover %d in cgroup %s", bg, cgroup)
	freezeGuardians(t, first.cmd.Process.Pid)

	next := startLockex(t, env, "-z", zk.Hosts(), "-i", id, "--", "sh", "-c", `date +%s%N > "$D/next"; sleep 0.3`)
	eventually(t, 10*time.Second, "the next contender waits", func() bool { return len(children(t, conn, "/lockex/"+id)) == 2 })

	if err := os.WriteFile(filepath.Join(dir, "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if code := first.wait(t, 10*time.Second); code != 0 {
		t.Fatalf("lockex exit %d; log:\n%s", code, first.stderr)
	}
	if running(bg) {
		t.Errorf("the leftover %d still runs after lockex released the lock and exited; log:\n%s", bg, first.stderr)
	}
	if code := next.wait(t, 20*time.Second); code != 0 {
		t.Fatalf("next exit %d; log:\n%s", code, next.stderr)
	}
	nextStart, _ := strconv.ParseInt(waitFile(t, filepath.Join(dir, "next")), 10, 64)
	if after, last := ticksAfter(t, filepath.Join(dir, "ticks"), nextStart); after > 0 {
		t.Errorf("the leftover ticked %d times after the next holder started, the last %s after it",
			after, time.Duration(last-nextStart).Round(time.Millisecond))
	}
	return cgroup
}

// TestStopReachesNestedCgroups: a workload run as root may make a cgroup
// under its own and move a daemon that left its process group there.
// cgroup.procs of the workload's cgroup does not list it; lockex must
// still stop it before the release.
func TestStopReachesNestedCgroups(t *testing.T) {
	cleanup := func(t *testing.T) {
		// What lockex left behind, if it left it.
		t.Cleanup(func() {
			matches, _ := filepath.Glob(cgroup2Mount(t) + "/lockex-*/inner")
			for _, m := range matches {
				_ = os.WriteFile(m+"/cgroup.kill", []byte("1"), 0)
				time.Sleep(50 * time.Millisecond)
				_ = syscall.Rmdir(m)
				_ = syscall.Rmdir(filepath.Dir(m))
			}
		})
	}
	cleanup(t)
	inner := escape(t, confinement{name: "cgroup"}, `cg="$CG2$(sed -n 's/^0:://p' /proc/self/cgroup)"
case "$cg" in */lockex-*) ;; *) echo "no cgroup of its own: $cg" >&2; exit 3;; esac
mkdir "$cg/inner" || exit 3
setsid sh -c 'echo $$ > "$1/inner/cgroup.procs" || exit; echo $$ > "$D/bg"
while :; do date +%s%N >> "$D/ticks"; sleep 0.01; done' sh "$cg" &`, alive)
	// The guardian is frozen: lockex itself removed the workload's cgroup
	// and the one made under it.
	if _, err := os.Stat(cgroup2Mount(t) + filepath.Dir(inner)); !os.IsNotExist(err) {
		t.Errorf("the workload's cgroup %s is still there (%v)", filepath.Dir(inner), err)
	}
}

// threadLeft is a process, in the workload's process group, whose main
// thread exits while another thread runs on: /proc/PID/stat says zombie.
const threadLeft = `/usr/bin/python3 -c '
import ctypes, os, threading, time
def tick():
    while True:
        with open(os.environ["D"] + "/ticks", "a") as f:
            f.write("%d\n" % time.time_ns())
        time.sleep(0.01)
threading.Thread(target=tick).start()
with open(os.environ["D"] + "/bg.tmp", "w") as f:
    f.write(str(os.getpid()))
os.rename(os.environ["D"] + "/bg.tmp", os.environ["D"] + "/bg")
ctypes.CDLL(None).pthread_exit(None)
' &`

// TestStopSeesThreadsOfAZombieLeader: a process whose main thread has
// exited is a zombie to /proc/PID/stat, but its other threads run: lockex
// must not take its process group, or its cgroup, for empty.
func TestStopSeesThreadsOfAZombieLeader(t *testing.T) {
	for _, c := range []confinement{{name: "cgroup"}, {name: "no cgroup", readOnlyCgroups: true}} {
		t.Run(c.name, func(t *testing.T) {
			escape(t, c, threadLeft, threadsRun)
		})
	}
}

// TestCrashWithStalledStderr: lockex crashes while its stderr is a pipe
// nobody drains. A Go panic, a fatal error, or a signal such as SIGABRT
// (sent here) makes the runtime stop every goroutine and write a trace
// to stderr before it exits; the workload, stopped by neither lockex nor
// its guardian until lockex is gone, must not run beside the next holder.
func TestCrashWithStalledStderr(t *testing.T) {
	zk := startZK(t)
	conn := zkClient(t, zk.Hosts())
	for _, c := range []confinement{
		{name: "cgroup", stalledStderr: true},
		{name: "no cgroup", readOnlyCgroups: true, stalledStderr: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			env := []string{"D=" + dir}
			id := "crash-" + strings.ReplaceAll(c.name, " ", "-")
			first := c.start(t, env, false, "-z", zk.Hosts(), "-i", id, "--session-timeout", "2s", "--kill-grace", "500ms", "--",
				"sh", "-c", `echo $$ > "$D/bg"; exec sh -c 'while :; do date +%s%N >> "$D/ticks"; sleep 0.01; done'`)
			bg, err := strconv.Atoi(waitFile(t, filepath.Join(dir, "bg")))
			if err != nil {
				t.Fatal(err)
			}
			waitFile(t, filepath.Join(dir, "ticks"))
			next := startLockex(t, env, "-z", zk.Hosts(), "-i", id, "--session-timeout", "2s", "--kill-grace", "500ms", "--", "sh", "-c", `date +%s%N > "$D/next"; sleep 0.3`)
			eventually(t, 10*time.Second, "the next contender waits", func() bool { return len(children(t, conn, "/lockex/"+id)) == 2 })

			crashed := time.Now()
			if err := syscall.Kill(first.cmd.Process.Pid, syscall.SIGABRT); err != nil {
				t.Fatal(err)
			}
			if code := next.wait(t, 20*time.Second); code != 0 {
				t.Fatalf("next exit %d; log:\n%s", code, next.stderr)
			}
			nextStart, _ := strconv.ParseInt(waitFile(t, filepath.Join(dir, "next")), 10, 64)
			t.Logf("the next holder started %s after the crash", time.Duration(nextStart-crashed.UnixNano()).Round(time.Millisecond))
			if after, last := ticksAfter(t, filepath.Join(dir, "ticks"), nextStart); after > 0 {
				t.Errorf("the workload %d ticked %d times after the next holder started, the last %s after it (lockex %s)",
					bg, after, time.Duration(last-nextStart).Round(time.Millisecond), describeState(first.cmd.Process.Pid))
			}
		})
	}
}

// describeState is a process's state, for a failure message.
func describeState(pid int) string {
	_, state := statOf(pid)
	if state == 0 {
		return "gone"
	}
	return "in state " + string(state)
}

// TestGuardianKilledThenLockex: the guardian is killed (by hand, by the
// OOM killer) while the workload runs, and lockex later. What the
// workload runs in the background must still be gone at once, not run on
// beside the next holder.
//
// A guardian that crashes (SIGABRT here, as a bug's panic would) while
// stderr is a pipe nobody drains must die, not hang writing its trace, so
// that lockex can replace it.
func TestGuardianKilledThenLockex(t *testing.T) {
	zk := startZK(t)
	conn := zkClient(t, zk.Hosts())
	for _, tc := range []struct {
		confinement
		sig syscall.Signal
	}{
		{confinement{name: "cgroup"}, syscall.SIGKILL},
		{confinement{name: "no cgroup", readOnlyCgroups: true}, syscall.SIGKILL},
		{confinement{name: "cgroup, stderr stalled", stalledStderr: true}, syscall.SIGABRT},
		{confinement{name: "no cgroup, stderr stalled", readOnlyCgroups: true, stalledStderr: true}, syscall.SIGABRT},
	} {
		c := tc.confinement
		t.Run(c.name+"/"+tc.sig.String(), func(t *testing.T) {
			dir := t.TempDir()
			env := []string{"D=" + dir}
			id := "guardian-killed-" + strings.NewReplacer(" ", "-", ",", "").Replace(c.name)
			first := c.start(t, env, false, "-z", zk.Hosts(), "-i", id, "--session-timeout", "2s", "--kill-grace", "500ms", "--",
				"sh", "-c", `(while :; do date +%s%N >> "$D/ticks"; sleep 0.01; done) & echo $! > "$D/bg"
exec sleep 1000`)
			bg, err := strconv.Atoi(waitFile(t, filepath.Join(dir, "bg")))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = syscall.Kill(bg, syscall.SIGKILL) })
			waitFile(t, filepath.Join(dir, "ticks"))
			guards, _ := lockexChildren(first.cmd.Process.Pid)
			if len(guards) != 1 {
				t.Fatalf("lockex has guardians %v, want one", guards)
			}
			if err := syscall.Kill(guards[0], tc.sig); err != nil {
				t.Fatal(err)
			}
			eventually(t, 5*time.Second, "the guardian is gone", func() bool { return !alive(guards[0]) })
			if c.stalledStderr {
				eventually(t, 5*time.Second, "lockex has a guardian again", func() bool {
					again, _ := lockexChildren(first.cmd.Process.Pid)
					return len(again) == 1 && again[0] != guards[0]
				})
			} else {
				eventually(t, 5*time.Second, "lockex says its guardian exited", func() bool {
					return strings.Contains(first.stderr.String(), "the guardian exited")
				})
			}

			next := startLockex(t, env, "-z", zk.Hosts(), "-i", id, "--session-timeout", "2s", "--kill-grace", "500ms", "--",
				"sh", "-c", `date +%s%N > "$D/next"; sleep 0.3`)
			eventually(t, 10*time.Second, "the next contender waits", func() bool { return len(children(t, conn, "/lockex/"+id)) == 2 })
			killed := time.Now()
			if err := syscall.Kill(first.cmd.Process.Pid, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			const bound = 1500 * time.Millisecond
			for alive(bg) && time.Since(killed) < bound {
				time.Sleep(10 * time.Millisecond)
			}
			if alive(bg) {
				t.Errorf("the background child %d still runs %s after lockex was SIGKILLed; log:\n%s", bg, bound, first.stderr)
			}
			if code := next.wait(t, 20*time.Second); code != 0 {
				t.Fatalf("next exit %d; log:\n%s", code, next.stderr)
			}
			nextStart, _ := strconv.ParseInt(waitFile(t, filepath.Join(dir, "next")), 10, 64)
			if after, last := ticksAfter(t, filepath.Join(dir, "ticks"), nextStart); after > 0 {
				t.Errorf("the background child ticked %d times after the next holder started, the last %s after it",
					after, time.Duration(last-nextStart).Round(time.Millisecond))
			}
		})
	}
}

// TestStopWaitsForWhatItCannotSignal: lockex, run as a user, runs a
// workload whose setuid-root helper (as sudo would) leaves a process in
// the workload's process group that the user may not signal. kill(-pgid,
// 0) then fails with EPERM, not ESRCH: lockex must not take the group for
// empty and release the lock while it runs, but hold the lock until it
// ends (here within a few seconds), and say why.
func TestStopWaitsForWhatItCannotSignal(t *testing.T) {
	zk := startZK(t)
	conn := zkClient(t, zk.Hosts())
	// Directories the user may enter: lockex, the helper and the ticks.
	dir, err := os.MkdirTemp("", "lockex-eperm-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []struct {
		from, to string
		mode     os.FileMode
	}{{lockexBin, "lockex", 0o755}, {"/usr/bin/python3", "rootpy", os.ModeSetuid | 0o755}} {
		b, err := os.ReadFile(f.from)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f.to), b, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(filepath.Join(dir, f.to), f.mode); err != nil {
			t.Fatal(err)
		}
	}
	env := []string{"D=" + dir}
	id := "eperm"
	first := startCommand(t, env, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--",
		filepath.Join(dir, "lockex"), "-z", zk.Hosts(), "-i", id, "--kill-grace", "500ms", "--",
		"sh", "-c", `"$D/rootpy" -c '
import os, subprocess
os.setuid(0)
subprocess.Popen(["sh", "-c", "echo $$ > \"$D/bg\"; for i in $(seq 60); do date +%s%N >> \"$D/ticks\"; sleep 0.01; done"])
'
while [ ! -e "$D/go" ]; do sleep 0.01; done`)
	bg, err := strconv.Atoi(waitFile(t, filepath.Join(dir, "bg")))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Kill(bg, syscall.SIGKILL) })
	waitFile(t, filepath.Join(dir, "ticks"))
	next := startLockex(t, env, "-z", zk.Hosts(), "-i", id, "--", "sh", "-c", `date +%s%N > "$D/next"`)
	eventually(t, 10*time.Second, "the next contender waits", func() bool { return len(children(t, conn, "/lockex/"+id)) == 2 })
	if err := os.WriteFile(filepath.Join(dir, "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if code := first.wait(t, 10*time.Second); code != 0 {
		t.Fatalf("lockex exit %d; log:\n%s", code, first.stderr)
	}
	if code := next.wait(t, 20*time.Second); code != 0 {
		t.Fatalf("next exit %d; log:\n%s", code, next.stderr)
	}
	nextStart, _ := strconv.ParseInt(waitFile(t, filepath.Join(dir, "next")), 10, 64)
	if after, last := ticksAfter(t, filepath.Join(dir, "ticks"), nextStart); after > 0 {
		t.Errorf("the root process %d ticked %d times after the next holder started, the last %s after it; log:\n%s",
			bg, after, time.Duration(last-nextStart).Round(time.Millisecond), first.stderr)
	}
	if !strings.Contains(first.stderr.String(), "not permitted") {
		t.Errorf("lockex did not say it may not signal what it waited for; log:\n%s", first.stderr)
	}
}
