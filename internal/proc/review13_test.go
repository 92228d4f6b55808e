package proc

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Review of e03e27f: Gone's first look made by its caller, the workload's
// empty cgroup removed after the release (and by the guardian's poll),
// /proc and cgroup files read with plain system calls.

// cgroupParentOf is where r makes its workloads' cgroups; the test fails
// where it can make none.
func cgroupParentOf(t *testing.T, r *Reaper) string {
	t.Helper()
	r.Prepare()
	r.mu.Lock()
	parent, err := r.confine.cgroupParent, r.confine.cgroupErr
	r.mu.Unlock()
	if parent == "" {
		t.Fatalf("no cgroup parent to make a cgroup in (this test needs root and a writable cgroup v2 hierarchy): %v", err)
	}
	return parent
}

// TestReview13GuardianSparesTheNextWorkloadsCgroup: Start tells the
// guardian of the next workload's cgroup before it forks into it, so the
// guardian learns of a cgroup that is empty, and stays empty until the
// fork. The guardian's poll runs once a second, whenever its ticker fires:
// it may run in between. It must not take that cgroup away: the fork into
// a removed cgroup fails, Start forks once more without one and gives up
// cgroups for good, and a daemon the workload starts with setsid is then
// out of reach of the stop (design §6.2, §6.4).
func TestReview13GuardianSparesTheNextWorkloadsCgroup(t *testing.T) {
	r := newReaper(t)
	cg, err := newCgroup(cgroupParentOf(t, r))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cg.forked()
		_ = removeCgroup(cg.path)
	})
	var g guarded
	g.groups, g.cgroups = map[int]bool{}, map[string]bool{}
	g.apply("guard cgroup " + cg.path) // Start: guarded before the fork
	g.forgetGone()                     // the guardian's poll, before the fork
	if !g.cgroups[cg.path] {
		t.Errorf("the guardian forgot %s, the cgroup the next workload is about to be forked into", cg.path)
	}
	if _, err := os.Stat(cg.path); err != nil {
		t.Errorf("the guardian removed %s before the workload was forked into it: %v", cg.path, err)
	}
	// The fork Start makes next.
	r.mu.Lock()
	pid, err := forkExec("/bin/true", []string{"true"}, &syscall.ProcAttr{
		Sys: &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: cg.fd},
	})
	r.mu.Unlock()
	if err != nil {
		t.Fatalf("fork into %s after the guardian's poll: %v (Start would fork the workload without a cgroup)", cg.path, err)
	}
	t.Logf("forked %d into %s", pid, cg.path)
}

// TestReview13GuardianKillsWhatANestedCgroupHolds: lockex dies; the
// workload, run as root, made a cgroup under its own and left a daemon
// there, out of its process group. The guardian's quiet removal of empty
// cgroups must not take the workload's cgroup for an empty one: it kills
// the daemon, says so, and removes both cgroups.
func TestReview13GuardianKillsWhatANestedCgroupHolds(t *testing.T) {
	r := newReaper(t)
	cg, err := newCgroup(cgroupParentOf(t, r))
	if err != nil {
		t.Fatal(err)
	}
	cg.forked()
	inner := filepath.Join(cg.path, "inner")
	t.Cleanup(func() {
		if _, err := os.Stat(cg.path); err == nil {
			_ = killCgroup(cg.path)
			within(5*time.Second, func() bool { return removeCgroup(cg.path) == nil })
		}
	})
	if err := os.Mkdir(inner, 0o755); err != nil {
		t.Fatal(err)
	}
	fd, err := syscall.Open(inner, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	daemon, err := forkExec("/bin/sleep", []string{"sleep", "1000"}, &syscall.ProcAttr{
		Sys: &syscall.SysProcAttr{Setsid: true, UseCgroupFD: true, CgroupFD: fd},
	})
	r.mu.Unlock()
	_ = syscall.Close(fd)
	if err != nil {
		t.Fatal(err)
	}
	if populated, err := cgroupPopulated(cg.path); err != nil || !populated {
		t.Fatalf("%s populated %v (%v), want true with the daemon in %s", cg.path, populated, err, inner)
	}

	var logs bytes.Buffer
	var g guarded
	g.groups, g.cgroups = map[int]bool{}, map[string]bool{}
	g.apply("guard cgroup " + cg.path)
	if code := g.killAll(slog.New(slog.NewTextHandler(&logs, nil))); code != 0 {
		t.Errorf("killAll: %d, want 0; log:\n%s", code, &logs)
	}
	if running(daemon) {
		t.Errorf("the daemon %d in %s survived the guardian; log:\n%s", daemon, inner, &logs)
	}
	if !strings.Contains(logs.String(), "killed what it started") || !strings.Contains(logs.String(), cg.path) {
		t.Errorf("the guardian did not say it killed %s; log:\n%s", cg.path, &logs)
	}
	if _, err := os.Stat(cg.path); !os.IsNotExist(err) {
		t.Errorf("cgroup %s not removed (%v)", cg.path, err)
	}
}

// pthreadExitLeader is a workload that leaves a daemon out of its process
// group (setsid) whose main thread exits while another thread goes on
// writing to $TRAIL: /proc/PID/stat says zombie, and only the workload's
// cgroup still holds it.
const pthreadExitLeader = `setsid /usr/bin/python3 -c '
import ctypes, os, threading, time
def tick():
    while True:
        with open(os.environ["TRAIL"], "a") as f:
            f.write("x\n")
        time.sleep(0.01)
threading.Thread(target=tick).start()
with open(os.environ["TRAIL"] + ".pid.tmp", "w") as f:
    f.write(str(os.getpid()))
os.rename(os.environ["TRAIL"] + ".pid.tmp", os.environ["TRAIL"] + ".pid")
ctypes.CDLL(None).pthread_exit(None)
' & exit 0`

// TestReview13ZombieLeaderInCgroup: the workload leaves a daemon that
// left its process group and whose main thread has exited; lockex is no
// subreaper, so only the cgroup reaches it. The cgroup's populated flag,
// which now lets the look skip the walk of the cgroup, must count the
// thread that runs: Gone must not come back closed from its first look,
// nor close before the daemon is stopped.
func TestReview13ZombieLeaderInCgroup(t *testing.T) {
	if _, err := os.Stat("/usr/bin/python3"); err != nil {
		t.Fatalf("this test needs /usr/bin/python3 for a process whose main thread exits first: %v", err)
	}
	// The test process reaps the daemon's zombie (see
	// TestReviewStrayWormInCgroup); the Reaper does not sweep it.
	if err := setChildSubreaper(); err != nil {
		t.Fatal(err)
	}
	r, err := NewReaper(slog.New(slog.NewTextHandler(io.Discard, nil)), false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	trail := t.TempDir() + "/trail"
	t.Setenv("TRAIL", trail)
	p := sh(t, r, pthreadExitLeader)
	cg := p.cgroup
	t.Cleanup(func() {
		if cg != "" {
			_ = killCgroup(cg)
		}
		p.KillAll()
	})
	if cg == "" {
		t.Fatalf("no cgroup of its own for the workload: this test needs root and a writable cgroup v2 hierarchy (%v)", r.confine.cgroupErr)
	}
	daemon := readPid(t, trail+".pid")
	waitDone(t, p)
	if !within(5*time.Second, func() bool { st, ok := statOf(daemon); return ok && st.state == 'Z' }) {
		t.Fatalf("the daemon %d's main thread did not exit", daemon)
	}
	if !growing(trail) {
		t.Fatal("the daemon's thread does not run")
	}
	select {
	case <-p.Gone():
		t.Fatalf("Gone closed at its first look while the daemon %d's thread runs in %s", daemon, cg)
	default:
	}
	goneOnlyOnceStopped(t, p, trail)
}

// TestReview13ReadFile: readFile reads what os.ReadFile reads, past its
// first 512 bytes, from a seq_file of /proc that hands it out in pieces,
// and from a FIFO whose writer writes in pieces (short reads).
func TestReview13ReadFile(t *testing.T) {
	dir := t.TempDir()
	big := bytes.Repeat([]byte("0123456789abcdef"), 100000/16)
	for name, content := range map[string][]byte{
		"empty": nil, "512": bytes.Repeat([]byte("x"), 512), "513": bytes.Repeat([]byte("y"), 513), "big": big,
	} {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, content, 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := readFile(path)
		if err != nil || !bytes.Equal(got, content) {
			t.Errorf("%s: %d bytes (%v), want %d", name, len(got), err, len(content))
		}
	}
	// A seq_file longer than the first read: the test binary's mappings
	// do not change while both are read.
	want, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	got, err := readFile("/proc/self/maps")
	if err != nil || len(want) <= 512 || !bytes.Equal(got, want) {
		t.Errorf("/proc/self/maps: %d bytes (%v), want the %d os.ReadFile read", len(got), err, len(want))
	}

	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	pieces := [][]byte{bytes.Repeat([]byte("a"), 300), bytes.Repeat([]byte("b"), 400), bytes.Repeat([]byte("c"), 5)}
	wrote := make(chan error, 1)
	go func() {
		f, err := os.OpenFile(fifo, os.O_WRONLY, 0)
		if err != nil {
			wrote <- err
			return
		}
		defer f.Close()
		for _, p := range pieces {
			if _, err := f.Write(p); err != nil {
				wrote <- err
				return
			}
			time.Sleep(20 * time.Millisecond) // so that each piece is a read of its own
		}
		wrote <- nil
	}()
	got, err = readFile(fifo)
	if werr := <-wrote; werr != nil {
		t.Fatal(werr)
	}
	if want := slices.Concat(pieces...); err != nil || !bytes.Equal(got, want) {
		t.Errorf("fifo: %d bytes (%v), want %d", len(got), err, len(want))
	}
}

// TestReview13FirstLookSeesLeftovers: the stop's first look is now Gone's,
// made as the workload's exit is noticed and before anything is
// signalled; found gone, nothing is signalled and the lock goes. Whatever
// the workload left, wherever only one of the three ways (its process
// group, the orphans handed to lockex, its cgroup) reaches it, neither
// that look nor any later one may find all gone while it runs; KillAll
// then ends it all.
func TestReview13FirstLookSeesLeftovers(t *testing.T) {
	if err := setChildSubreaper(); err != nil { // the test reaps what the Reaper does not
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name      string
		subreaper bool // orphans handed to lockex are swept
		cgroup    bool
		script    string
	}{
		{"group, no cgroup", false, false, `sleep 1000 & exit 0`},
		{"orphan out of the group, no cgroup", true, false, `setsid sleep 1000 & exit 0`},
		{"stray in the cgroup only", false, true, `setsid sleep 1000 & exit 0`},
		{"worm in the group, no cgroup", false, false, `sh -c "$W" & exit 0`},
		{"stray worm in the cgroup only", false, true, `setsid sh -c "$SW" & exit 0`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := NewReaper(slog.New(slog.NewTextHandler(io.Discard, nil)), tc.subreaper)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(r.Close)
			if !tc.cgroup {
				noConfinement(r)
			}
			t.Setenv("W", `sh -c "$W" & exit 0`)
			t.Setenv("SW", `setsid sh -c "$SW" & exit 0`)
			p := sh(t, r, tc.script)
			cg := p.cgroup
			t.Cleanup(func() {
				for range 100 {
					if cg != "" {
						_ = killCgroup(cg)
					}
					p.KillAll()
					populated := false
					if cg != "" {
						populated, _ = cgroupPopulated(cg)
					}
					if syscall.Kill(-p.Pid(), 0) == syscall.ESRCH && !populated {
						return
					}
					time.Sleep(10 * time.Millisecond)
				}
			})
			if tc.cgroup && cg == "" {
				t.Fatalf("no cgroup of its own for the workload: this test needs root and a writable cgroup v2 hierarchy (%v)", r.confine.cgroupErr)
			}
			waitDone(t, p)
			select {
			case <-p.Gone():
				t.Fatal("Gone closed at its first look, with what the workload left running")
			default:
			}
			// A look that finds members of the group but none alive
			// (the worm, between two of its processes) SIGKILLs the
			// group: all gone may then be true, if nothing runs.
			for poll := 1; poll <= 50; poll++ {
				if p.allGone() {
					if !within(2*time.Second, func() bool { return syscall.Kill(-p.Pid(), 0) == syscall.ESRCH }) {
						t.Fatalf("all gone at look %d, while the workload's group runs", poll)
					}
					if cg != "" {
						if populated, err := cgroupPopulated(cg); err != nil || populated {
							t.Fatalf("all gone at look %d, with %s populated %v (%v)", poll, cg, populated, err)
						}
					}
					if tc.script == "sleep 1000 & exit 0" || strings.Contains(tc.script, "setsid sleep") {
						t.Fatalf("all gone at look %d: what killed the sleep the workload left?", poll)
					}
					t.Logf("all gone at look %d, and nothing of it runs", poll)
					break
				}
			}
			p.KillAll()
			select {
			case <-p.Gone():
			case <-time.After(10 * time.Second):
				t.Fatal("not gone 10s after KillAll")
			}
			if syscall.Kill(-p.Pid(), 0) != syscall.ESRCH {
				t.Error("gone, with the workload's process group still there")
			}
			if cg != "" {
				if populated, err := cgroupPopulated(cg); err == nil && populated {
					t.Errorf("gone, with %s still populated", cg)
				}
			}
		})
	}
}

// TestReview13ManyEndsThenClose: workloads that leave nothing end all at
// once, each looked at by two callers of Gone at the same time (the first
// look is now the caller's, under the Reaper's lock, beside the reaping);
// then the next Start and Close race no look. Every Gone closes, and every
// cgroup, removed after its workload's release, is gone once Close returns.
func TestReview13ManyEndsThenClose(t *testing.T) {
	r, closeNow := closeLater(t)
	var cgroups []string
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for range 30 {
		p, err := r.Start("/bin/sh", []string{"sh", "-c", "exit 0"}, os.Environ())
		if err != nil {
			t.Fatal(err)
		}
		r.mu.Lock()
		if p.cgroup != "" {
			cgroups = append(cgroups, p.cgroup)
		}
		r.mu.Unlock()
		for range 2 {
			wg.Go(func() {
				select {
				case <-p.Done():
				case <-time.After(10 * time.Second):
					errs <- fmt.Errorf("workload %d did not end", p.Pid())
					return
				}
				select {
				case <-p.Gone():
				case <-time.After(10 * time.Second):
					errs <- fmt.Errorf("workload %d, which left nothing, not gone after 10s", p.Pid())
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	closeNow()
	if len(cgroups) == 0 {
		t.Fatalf("no workload got a cgroup (%v)", r.confine.cgroupErr)
	}
	for _, cg := range cgroups {
		if _, err := os.Stat(cg); !os.IsNotExist(err) {
			t.Errorf("cgroup %s still there after Close (%v)", cg, err)
		}
	}
}

// TestReview13RestartedGuardianRemovesTheEndedCgroup: the cgroup of a
// workload that ended is removed only at the next Start or at Close,
// until when the guardian keeps it, to remove it should lockex die. A
// guardian started in place of one that was killed (watchGuard) must be
// told of it too; else lockex's death leaves the cgroup behind.
func TestReview13RestartedGuardianRemovesTheEndedCgroup(t *testing.T) {
	r := newReaper(t)
	p := sh(t, r, "exit 0")
	cg := p.cgroup
	if cg == "" {
		t.Fatalf("no cgroup of its own for the workload: this test needs root and a writable cgroup v2 hierarchy (%v)", r.confine.cgroupErr)
	}
	t.Cleanup(func() { _ = removeCgroup(cg) })
	waitDone(t, p)
	<-p.Gone()
	first := guardian(t, r)
	if err := syscall.Kill(first.Pid(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var next *Process
	if !within(10*time.Second, func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		if g := r.confine.guard; g != nil && g.pid != first.Pid() {
			next = r.procs[g.pid]
		}
		return next != nil
	}) {
		t.Fatal("no guardian started in place of the killed one")
	}
	r.mu.Lock()
	r.confine.guard.w.Close() // lockex's death, as the new guardian sees it
	r.mu.Unlock()
	if code := waitDone(t, next); code != 0 {
		t.Errorf("guardian exit code %d, want 0", code)
	}
	if _, err := os.Stat(cg); !os.IsNotExist(err) {
		t.Errorf("the ended workload's cgroup %s outlived lockex and its guardian (%v)", cg, err)
	}
}

// TestReview13LookWithoutDescriptors: a look for what is left under the
// lock made while lockex can open no file (EMFILE: its descriptors used
// up, say by connections to --http-addr) reads neither /proc nor the
// cgroup's files. It knows nothing then, and must not say all is gone:
// the lock would go with a daemon the workload left still running.
func TestReview13LookWithoutDescriptors(t *testing.T) {
	if err := setChildSubreaper(); err != nil { // the test reaps what the Reaper does not
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name              string
		subreaper, cgroup bool
	}{
		{"cgroup", false, true},
		{"subreaper", true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := NewReaper(slog.New(slog.NewTextHandler(io.Discard, nil)), tc.subreaper)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(r.Close)
			if !tc.cgroup {
				noConfinement(r)
			}
			dir := t.TempDir()
			t.Setenv("D", dir)
			p := sh(t, r, `setsid sleep 1000 & echo $! > "$D/daemon"; exit 0`)
			daemon := readPid(t, dir+"/daemon")
			t.Cleanup(func() { p.KillAll(); <-p.Gone() })
			if tc.cgroup && p.cgroup == "" {
				t.Fatalf("no cgroup of its own for the workload: this test needs root and a writable cgroup v2 hierarchy (%v)", r.confine.cgroupErr)
			}
			waitDone(t, p)
			if !within(5*time.Second, func() bool { st, ok := statOf(daemon); return ok && st.pgrp == daemon }) {
				t.Fatalf("the daemon %d did not leave the workload's group", daemon)
			}

			var lim syscall.Rlimit
			if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
				t.Fatal(err)
			}
			tight := lim
			tight.Cur = lowestFreeFd(t)
			if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &tight); err != nil {
				t.Fatal(err)
			}
			// The few descriptors still free under the limit are taken.
			var held []int
			var openErr error
			for range 100 {
				fd, err := syscall.Open("/dev/null", syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
				if err != nil {
					openErr = err
					break
				}
				held = append(held, fd)
			}
			gone := false
			if openErr != nil {
				gone = p.allGone()
			}
			for _, fd := range held {
				_ = syscall.Close(fd)
			}
			if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
				t.Fatal(err)
			}
			if openErr != syscall.EMFILE {
				t.Fatalf("descriptors not used up (%v): the test's premise failed", openErr)
			}
			if gone && running(daemon) {
				t.Errorf("all gone by a look that could open nothing (%v), with the daemon %d running", openErr, daemon)
			}
		})
	}
}
