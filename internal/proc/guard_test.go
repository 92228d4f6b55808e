package proc

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// running reports whether pid exists and is not a zombie.
func running(pid int) bool {
	st, ok := statOf(pid)
	return ok && st.state != 'Z' && st.state != 'X'
}

// within polls cond every 10ms for up to d.
func within(d time.Duration, cond func() bool) bool {
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return cond()
}

// readPid waits for a workload to write a pid to the file at path.
func readPid(t *testing.T, path string) int {
	t.Helper()
	var pid int
	if !within(10*time.Second, func() bool {
		b, err := os.ReadFile(path)
		pid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		return err == nil && pid > 0
	}) {
		t.Fatalf("nothing in %s", path)
	}
	t.Cleanup(func() {
		if running(pid) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	return pid
}

// guardian is r's guardian, and the Process the Reaper registered for it.
func guardian(t *testing.T, r *Reaper) *Process {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	g := r.confine.guard
	if g == nil {
		t.Fatalf("no guardian: %v", r.confine.err)
	}
	return r.procs[g.pid]
}

// TestGuardianKillsWhenLockexDies: the guardian's stdin reaches end of file
// without done, as when lockex is SIGKILLed. The workload's process group
// dies at once, and so does a daemon that left it if the workload has a
// cgroup of its own.
func TestGuardianKillsWhenLockexDies(t *testing.T) {
	r := newReaper(t)
	dir := t.TempDir()
	t.Setenv("D", dir)
	p := sh(t, r, `sleep 1000 & echo $! > "$D/bg"
setsid sleep 1000 & echo $! > "$D/daemon"
exec sleep 1000`)
	bg, daemon := readPid(t, dir+"/bg"), readPid(t, dir+"/daemon")
	g := guardian(t, r)
	cg := p.cgroup
	t.Logf("cgroup %q (%v)", cg, r.confine.cgroupErr)

	lockexDiesWith(t, r, p, bg)
	if cg != "" {
		if !within(5*time.Second, func() bool { return !running(daemon) }) {
			t.Error("the daemon survived its cgroup")
		}
		if !within(5*time.Second, func() bool { _, err := os.Stat(cg); return os.IsNotExist(err) }) {
			t.Errorf("cgroup %s not removed", cg)
		}
	} else if !running(daemon) {
		t.Error("the daemon, out of reach without a cgroup, died: of what?")
	}
	if code := waitDone(t, g); code != 0 {
		t.Errorf("guardian exit code %d, want 0", code)
	}
}

// lockexDiesWith closes the guardian's pipe without done, which is lockex's
// death as far as the guardian can tell, and checks that the workload p
// and its background child bg are SIGKILLed.
func lockexDiesWith(t *testing.T, r *Reaper, p *Process, bg int) {
	t.Helper()
	r.mu.Lock()
	r.confine.guard.w.Close()
	r.mu.Unlock()
	if code := waitDone(t, p); code != 137 {
		t.Errorf("workload exit code %d, want 137 (SIGKILL)", code)
	}
	if !within(5*time.Second, func() bool { return !running(bg) }) {
		t.Error("the background child survived")
	}
}

// closeLater is a Reaper the test closes itself, with a fallback.
func closeLater(t *testing.T) (*Reaper, func()) {
	t.Helper()
	r, err := NewReaper(slog.New(slog.NewTextHandler(io.Discard, nil)), true)
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	closeOnce := func() {
		if !closed {
			closed = true
			r.Close()
		}
	}
	t.Cleanup(closeOnce)
	return r, closeOnce
}

// waitClosed waits for p to end once r is closed, and returns its exit
// code (128+N for signal N). The Reaper may have reaped it as it closed;
// if not, the test does.
func waitClosed(t *testing.T, p *Process) int {
	t.Helper()
	c := make(chan int, 1)
	go func() {
		var ws syscall.WaitStatus
		if _, err := syscall.Wait4(p.Pid(), &ws, 0, nil); err != nil {
			<-p.Done()
			c <- p.ExitCode()
			return
		}
		p.exited(ws)
		c <- p.ExitCode()
	}()
	select {
	case code := <-c:
		return code
	case <-time.After(10 * time.Second):
		t.Fatalf("pid %d still runs after lockex closed", p.Pid())
		return -1
	}
}

// TestGuardianLetsGo: once lockex has stopped the workload, it closes with
// done and the guardian exits without killing anything; the cgroup is
// gone. A workload still running when lockex closes is killed.
func TestGuardianLetsGo(t *testing.T) {
	t.Run("stopped", func(t *testing.T) {
		r, closeReaper := closeLater(t)
		p := sh(t, r, `sleep 1000 & exit 0`)
		waitDone(t, p)
		g := guardian(t, r)
		cg := p.cgroup
		p.SignalAll(syscall.SIGTERM)
		<-p.Gone()
		closeReaper()
		if code := waitClosed(t, g); code != 0 {
			t.Errorf("guardian exit code %d", code)
		}
		if cg != "" {
			if _, err := os.Stat(cg); !os.IsNotExist(err) {
				t.Errorf("cgroup %s still there: %v", cg, err)
			}
		}
	})
	t.Run("still running", func(t *testing.T) {
		r, closeReaper := closeLater(t)
		p := sh(t, r, `exec sleep 1000`)
		g := guardian(t, r)
		closeReaper()
		if code := waitClosed(t, p); code != 137 {
			t.Errorf("workload exit code %d, want 137 (SIGKILL)", code)
		}
		waitClosed(t, g)
	})
}

// TestGuardedForgetsGoneGroups: a group with no member left, not even a
// zombie, may be reused at any time: the guardian forgets it, and keeps a
// group that still has members.
func TestGuardedForgetsGoneGroups(t *testing.T) {
	r := newReaper(t)
	gone := sh(t, r, "exit 0")
	waitDone(t, gone)
	live := sh(t, r, "exec sleep 1000")
	t.Cleanup(func() { _ = live.Signal(syscall.SIGKILL) })

	var g guarded
	g.groups, g.cgroups = map[int]bool{}, map[string]bool{}
	for _, line := range []string{
		"guard group " + strconv.Itoa(gone.Pid()),
		"guard group " + strconv.Itoa(live.Pid()),
		"guard group 1", // never init's, whatever a bug sends
		"guard group x",
		"guard cgroup /sys/fs/cgroup/a",
		"guard cgroup /sys/fs/cgroup/b",
		"forget cgroup /sys/fs/cgroup/b",
		"nonsense",
	} {
		g.apply(line)
	}
	g.forgetGone()
	if len(g.groups) != 1 || !g.groups[live.Pid()] {
		t.Errorf("groups %v, want only %d", g.groups, live.Pid())
	}
	if len(g.cgroups) != 1 || !g.cgroups["/sys/fs/cgroup/a"] {
		t.Errorf("cgroups %v, want only /sys/fs/cgroup/a", g.cgroups)
	}
}

func TestUnescapeMountinfo(t *testing.T) {
	for in, want := range map[string]string{
		`/sys/fs/cgroup`:         "/sys/fs/cgroup",
		`/mnt/with\040space`:     "/mnt/with space",
		`/tab\011and\134slash`:   "/tab\tand\\slash",
		`/trailing\04`:           `/trailing\04`,
		`/not\999octal`:          `/not\999octal`,
		`/sys/fs/cgroup/unified`: "/sys/fs/cgroup/unified",
	} {
		if got := unescapeMountinfo(in); got != want {
			t.Errorf("unescapeMountinfo(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestOwnCgroup: where the test runs in a cgroup v2 hierarchy, the
// directory found lists the test among its processes.
func TestOwnCgroup(t *testing.T) {
	dir, err := ownCgroup()
	if err != nil {
		b, _ := os.ReadFile("/proc/self/cgroup")
		if strings.Contains(string(b), "\n0::") || strings.HasPrefix(string(b), "0::") {
			t.Fatalf("in a cgroup v2 (%q) but: %v", b, err)
		}
		return
	}
	procs, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains("\n"+string(procs), "\n"+strconv.Itoa(os.Getpid())+"\n") {
		t.Errorf("%s/cgroup.procs does not list the test (pid %d)", dir, os.Getpid())
	}
}

// TestPrepareStartsTheGuardianBeforeTheWorkload: Prepare, called while
// lockex waits for the lock, starts the guardian; Start then uses it (no
// second guardian) and it guards the workload as one started by Start
// would. A lockex that closes after Prepare and before any workload lets
// its guardian go with nothing to kill; one that closed first starts none.
func TestPrepareStartsTheGuardianBeforeTheWorkload(t *testing.T) {
	t.Run("guards the workload", func(t *testing.T) {
		r := newReaper(t)
		r.Prepare()
		g := guardian(t, r)
		if !running(g.Pid()) {
			t.Fatalf("guardian %d does not run after Prepare", g.Pid())
		}
		r.Prepare() // again: the same guardian
		if again := guardian(t, r); again != g {
			t.Fatalf("a second Prepare started guardian %d beside %d", again.Pid(), g.Pid())
		}
		dir := t.TempDir()
		t.Setenv("D", dir)
		p := sh(t, r, `sleep 1000 & echo $! > "$D/bg"
exec sleep 1000`)
		bg := readPid(t, dir+"/bg")
		if now := guardian(t, r); now != g {
			t.Fatalf("Start started guardian %d beside the prepared %d", now.Pid(), g.Pid())
		}
		lockexDiesWith(t, r, p, bg)
	})
	t.Run("closed while waiting", func(t *testing.T) {
		r, closeNow := closeLater(t)
		r.Prepare()
		g := guardian(t, r)
		closeNow()
		if code := waitClosed(t, g); code != 0 {
			t.Errorf("guardian exit code %d, want 0: it had nothing to kill", code)
		}
	})
	t.Run("closed before", func(t *testing.T) {
		r, closeNow := closeLater(t)
		closeNow()
		r.Prepare()
		r.mu.Lock()
		defer r.mu.Unlock()
		if g := r.confine.guard; g != nil {
			_ = syscall.Kill(g.pid, syscall.SIGKILL)
			t.Fatalf("Prepare after Close started guardian %d", g.pid)
		}
	})
}

// TestEndedWorkloadLeavesNothingToStop: a workload that exited and left
// nothing is gone at Gone's first look, before Gone returns. Its empty
// cgroup is removed later, off the release's path: at the next start, or
// when lockex closes; and should lockex die in between, the guardian
// removes it without anything to kill.
func TestEndedWorkloadLeavesNothingToStop(t *testing.T) {
	t.Run("next start and close", func(t *testing.T) {
		r, closeNow := closeLater(t)
		first := sh(t, r, "exit 0")
		cg := first.cgroup
		waitDone(t, first)
		select {
		case <-first.Gone():
		default:
			t.Fatal("Gone was not closed when it returned, though nothing was left")
		}
		second := sh(t, r, "exit 0")
		if cg != "" {
			if _, err := os.Stat(cg); !os.IsNotExist(err) {
				t.Errorf("the ended workload's cgroup %s is still there after the next start (%v)", cg, err)
			}
		} else {
			t.Logf("no cgroup: %v", r.confine.cgroupErr)
		}
		cg = second.cgroup
		waitDone(t, second)
		<-second.Gone()
		closeNow()
		if cg != "" {
			if _, err := os.Stat(cg); !os.IsNotExist(err) {
				t.Errorf("the last workload's cgroup %s is still there after Close (%v)", cg, err)
			}
		}
	})
	t.Run("lockex dies before the removal", func(t *testing.T) {
		r := newReaper(t)
		p := sh(t, r, "exit 0")
		cg := p.cgroup
		waitDone(t, p)
		<-p.Gone()
		g := guardian(t, r)
		r.mu.Lock()
		r.confine.guard.w.Close() // lockex's death, as the guardian sees it
		r.mu.Unlock()
		if code := waitDone(t, g); code != 0 {
			t.Errorf("guardian exit code %d, want 0", code)
		}
		if cg == "" {
			t.Logf("no cgroup: %v", r.confine.cgroupErr)
			return
		}
		if _, err := os.Stat(cg); !os.IsNotExist(err) {
			t.Errorf("cgroup %s not removed by the guardian (%v)", cg, err)
		}
	})
}

// TestGuardedDropsEmptyCgroups: once lockex is gone, a cgroup with nothing
// in it is removed and forgotten before the guardian decides whether
// lockex left anything running, so that it does not warn of a kill that
// kills nothing.
func TestGuardedDropsEmptyCgroups(t *testing.T) {
	r := newReaper(t)
	r.Prepare()
	r.mu.Lock()
	parent, perr := r.confine.cgroupParent, r.confine.cgroupErr
	r.mu.Unlock()
	if parent == "" {
		t.Fatalf("no cgroup parent to make a cgroup in: %v", perr)
	}
	cg, err := newCgroup(parent)
	if err != nil {
		t.Fatal(err)
	}
	cg.forked()
	var g guarded
	g.groups, g.cgroups = map[int]bool{}, map[string]bool{}
	g.apply("guard cgroup " + cg.path)
	var logs strings.Builder
	if code := g.killAll(slog.New(slog.NewTextHandler(&logs, nil))); code != 0 || logs.Len() != 0 {
		t.Errorf("killAll: %d, want 0 and nothing said; log:\n%s", code, logs.String())
	}
	if len(g.cgroups) != 0 {
		t.Errorf("cgroups %v, want the empty one forgotten", g.cgroups)
	}
	if _, err := os.Stat(cg.path); !os.IsNotExist(err) {
		t.Errorf("empty cgroup %s not removed (%v)", cg.path, err)
	}
}
