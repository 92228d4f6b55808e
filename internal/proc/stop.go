package proc

import (
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// stopPoll is how often Stop looks again. A process group emptying, or a
// process that is not lockex's child exiting, sends lockex no event, so
// this is a poll; it only runs while something is left to stop.
const stopPoll = 10 * time.Millisecond

// Stop ends everything started under the lock: the workload's process
// group and every orphan handed to lockex (when it is PID 1 or a
// subreaper). Each gets sig (and SIGCONT, in case it is stopped) once, then
// SIGKILL when grace has passed. Stop returns only when all of them are
// gone, so the lock can be released. It is a no-op when the workload ended
// and left nothing behind.
func (p *Process) Stop(sig syscall.Signal, grace time.Duration) {
	<-p.StartStop(sig, grace)
}

// StartStop is Stop that returns as soon as sig is sent (SIGKILL, if grace
// is 0), so that the caller can report while the rest goes on; the channel
// closes when all is gone.
func (p *Process) StartStop(sig syscall.Signal, grace time.Duration) <-chan struct{} {
	s := &stopping{p: p, sig: sig, grace: grace, deadline: time.Now().Add(grace), signalled: map[int]bool{}, refused: map[int]bool{}}
	gone := make(chan struct{})
	if s.round() {
		close(gone)
		return gone
	}
	go func() {
		defer close(gone)
		tick := time.NewTicker(stopPoll)
		defer tick.Stop()
		for range tick.C {
			if s.round() {
				return
			}
		}
	}()
	return gone
}

// stopping is one Stop under way.
type stopping struct {
	p         *Process
	sig       syscall.Signal
	grace     time.Duration
	deadline  time.Time
	signalled map[int]bool
	// refused lists the targets lockex may not signal, said once each.
	refused   map[int]bool
	groupGone bool
	killing   bool
}

// round reaps, signals what is left, and reports whether nothing is. It
// logs only after its signals are sent, and outside the reaper's lock.
func (s *stopping) round() (done bool) {
	r := s.p.reaper
	r.mu.Lock()
	left, _ := r.reapLocked()
	var targets []int
	if !s.groupGone {
		// Once empty, the group's id may be reused by someone else:
		// never signal it again.
		if groupAlive(s.p.pid) {
			targets = append(targets, -s.p.pid)
		} else {
			s.groupGone = true
		}
	}
	if left && r.orphans {
		targets = append(targets, r.childrenLocked()...)
	}
	// What left the group (a setsid daemon) is still in the workload's
	// cgroup, where there is one: stop it too, before the release, not
	// only when lockex dies.
	targets = append(targets, s.p.strayedLocked(targets)...)
	// The cgroup, with what a workload run as root made under it, is
	// empty only when the kernel says so: whatever it holds that was not
	// named above still runs under the lock, and cgroup.kill ends it.
	if len(targets) == 0 && !s.p.cgroupLive() {
		// All gone, but what died since the wait4 above may be a zombie
		// of ours still: collect it, so that the workload's exit status
		// is known when Stop returns. The group's id may be reused from
		// now on, so the guardian must forget it before the release.
		r.reapLocked()
		s.p.forgetLocked()
		r.mu.Unlock()
		return true
	}
	startKilling := !s.killing && !time.Now().Before(s.deadline)
	s.killing = s.killing || startKilling
	if s.killing && s.p.cgroup != "" {
		// One write kills the whole cgroup and the cgroups under it,
		// including what forks meanwhile; once more each round, for what
		// moved in since.
		_ = killCgroup(s.p.cgroup)
	}
	var termed, refused []int
	for _, t := range targets {
		var err error
		switch {
		case s.killing:
			err = syscall.Kill(t, syscall.SIGKILL)
		case !s.signalled[t]:
			s.signalled[t] = true
			termed = append(termed, t)
			err = syscall.Kill(t, s.sig)
			_ = syscall.Kill(t, syscall.SIGCONT)
		}
		if err == syscall.EPERM && !s.refused[t] {
			s.refused[t] = true
			refused = append(refused, t)
		}
	}
	// r.mu was held from wait4 to kill: no pid signalled above can have
	// been reaped, and so reused, in between.
	r.mu.Unlock()
	for _, t := range termed {
		r.log.Info("stopping what runs under the lock", "target", describeTarget(t), "signal", s.sig.String())
	}
	for _, t := range refused {
		r.log.Warn("may not signal what runs under the lock; holding the lock until it ends",
			"target", describeTarget(t), "err", syscall.EPERM)
	}
	if startKilling {
		r.log.Warn("still running after the grace; sent SIGKILL", "grace", s.grace, "targets", targets)
	}
	return false
}

// cgroupLive reports whether the workload's cgroup, or one under it, still
// holds a process that runs.
func (p *Process) cgroupLive() bool {
	if p.cgroup == "" {
		return false
	}
	populated, err := cgroupPopulated(p.cgroup)
	return err == nil && populated
}

// groupAlive reports whether process group pgid has a member that is not a
// zombie. kill(-pgid, 0) alone counts zombies too: a member orphaned to an
// init that is slow to reap (or never does, as some container inits) would
// hold the lock for nothing.
//
// Only ESRCH means that no member is left. EPERM means that no member
// may be signalled by lockex (a setuid-root helper that became root, as
// sudo does, run by lockex as a user): the group is not gone, and the
// lock must not be released while it runs.
func groupAlive(pgid int) bool {
	if syscall.Kill(-pgid, 0) == syscall.ESRCH {
		return false
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return true
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, ok := statOf(pid); ok && st.pgrp == pgid && runs(pid, st) {
			return true
		}
	}
	return false
}

// runs reports whether process pid, whose /proc/PID/stat says st, has a
// thread that still runs. A process whose main thread has exited (as
// with pthread_exit in main) is a zombie to /proc/PID/stat while its other
// threads run on, and its status is not reported until they end: it is
// not gone, and neither is its process group.
func runs(pid int, st stat) bool {
	if st.state != 'Z' && st.state != 'X' {
		return true
	}
	dir := "/proc/" + strconv.Itoa(pid) + "/task/"
	tasks, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	for _, task := range tasks {
		if task.Name() == strconv.Itoa(pid) {
			continue
		}
		if st, ok := statAt(dir + task.Name() + "/stat"); ok && st.state != 'Z' && st.state != 'X' {
			return true
		}
	}
	return false
}

func describeTarget(t int) string {
	if t < 0 {
		return "process group " + strconv.Itoa(-t)
	}
	return "orphan " + strconv.Itoa(t)
}

// childrenLocked lists lockex's living children other than the workload's
// main process: the orphans handed to it. There is no system call for
// this, so it reads each process's parent from /proc. Called with r.mu
// held, so none of them can be reaped meanwhile.
func (r *Reaper) childrenLocked() []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		r.log.Warn("cannot list orphans to stop", "err", err)
		return nil
	}
	self := os.Getpid()
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || r.procs[pid] != nil {
			continue
		}
		if st, ok := statOf(pid); ok && st.ppid == self && runs(pid, st) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// stat is what lockex needs from /proc/PID/stat.
type stat struct {
	state      byte
	ppid, pgrp int
}

// statOf reads /proc/PID/stat, whose second field (the command name, in
// parentheses) may itself contain spaces and parentheses.
func statOf(pid int) (stat, bool) {
	return statAt("/proc/" + strconv.Itoa(pid) + "/stat")
}

// statAt reads a stat file of /proc: a process's, or one of its threads'.
func statAt(path string) (stat, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return stat{}, false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return stat{}, false
	}
	// After the name: state, ppid, pgrp, ...
	f := strings.Fields(s[i+1:])
	if len(f) < 3 {
		return stat{}, false
	}
	ppid, err1 := strconv.Atoi(f[1])
	pgrp, err2 := strconv.Atoi(f[2])
	return stat{state: f[0][0], ppid: ppid, pgrp: pgrp}, err1 == nil && err2 == nil
}

// strayedLocked lists the living members of the workload's cgroup, and of
// the cgroups a workload run as root may make under it, that are in none of
// targets: they left its process group and are not lockex's children.
// Called with r.mu held.
func (p *Process) strayedLocked(targets []int) []int {
	if p.cgroup == "" {
		return nil
	}
	var pids []int
	_ = filepath.WalkDir(p.cgroup, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		b, err := os.ReadFile(filepath.Join(path, "cgroup.procs"))
		if err != nil {
			return nil
		}
		for _, f := range strings.Fields(string(b)) {
			pid, err := strconv.Atoi(f)
			if err != nil || slices.Contains(targets, pid) || slices.Contains(pids, pid) {
				continue
			}
			if st, ok := statOf(pid); ok && st.pgrp != p.pid && runs(pid, st) {
				pids = append(pids, pid)
			}
		}
		return nil
	})
	return pids
}
