package proc

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// stopPoll is how often Gone looks again. A process group emptying, or a
// process that is not lockex's child exiting, sends lockex no event, so
// this is a poll; it only runs while someone waits for Gone.
const stopPoll = 10 * time.Millisecond

// The supervisor decides how the workload is stopped (which signal, how
// long a grace); what is here only finds everything that runs under the
// lock and signals it without ever hitting a process that is not ours.

// SignalAll sends sig to everything started under the lock: the workload's
// process group, every orphan handed to lockex (when it is PID 1 or a
// subreaper), and whatever left the group but not the workload's cgroup.
// It names what it signalled.
func (p *Process) SignalAll(sig syscall.Signal) []string {
	r := p.reaper
	r.mu.Lock()
	// r.mu is held from the wait4 in targetsLocked to the kill: no pid
	// signalled here can have been reaped, and so reused, in between.
	var signalled, refused []int
	for round := 1; ; round++ {
		targets, sure := p.targetsLocked()
		for _, t := range targets {
			if !slices.Contains(signalled, t) {
				if syscall.Kill(t, sig) == syscall.EPERM && !p.refused[t] {
					if p.refused == nil {
						p.refused = map[int]bool{}
					}
					p.refused[t] = true
					refused = append(refused, t)
				}
				signalled = append(signalled, t)
			}
		}
		// Unsure, look again: what a child that just died handed
		// lockex is listed now. A process sent SIGKILL forks no more,
		// so KillAll's looks end; others' are bounded, and Gone stays
		// open while it is unsure.
		if sure || round == signalRounds {
			break
		}
	}
	names := p.describeTargets(signalled)
	r.mu.Unlock()
	for _, t := range refused {
		// A setuid helper that became root, run by lockex as a user: it
		// is not gone (groupState), and the lock waits for its end.
		r.log.Warn("may not signal what runs under the lock; holding the lock until it ends",
			"target", describeTarget(t), "err", syscall.EPERM)
	}
	return names
}

// signalRounds bounds the looks of one SignalAll.
const signalRounds = 20

// KillAll is SignalAll(SIGKILL), and where the workload has a cgroup of its
// own it kills the cgroup too: one write that also takes what forks
// meanwhile. Without one, Gone's looks from then on send SIGKILL to what
// they find.
func (p *Process) KillAll() []string {
	p.reaper.mu.Lock()
	cg := p.cgroup
	p.killing = true
	p.reaper.mu.Unlock()
	if cg == "" {
		return p.SignalAll(syscall.SIGKILL)
	}
	_ = killCgroup(cg)
	// The cgroup's kill may have taken everything before the look below:
	// name it, so that what was killed is never reported as nothing.
	return append([]string{"cgroup " + cg}, p.SignalAll(syscall.SIGKILL)...)
}

// Gone closes once nothing started under the lock is left, and the
// workload's exit status is known. The guardian has then forgotten the
// workload's process group, whose id may be reused from then on. The
// first look is the caller's: a workload that left nothing behind is
// found gone before Gone returns, with no poller started.
func (p *Process) Gone() <-chan struct{} {
	p.goneOnce.Do(func() {
		gone := false
		defer func() {
			// Also when the first look panics: the Once is spent then,
			// and a caller cleaning up after the panic waits on Gone.
			// The poller looks again, and panics in its own goroutine,
			// which ends lockex and its session, rather than leaving it
			// holding the lock with a channel that never closes.
			if gone {
				close(p.gone)
			} else {
				go p.pollGone()
			}
		}()
		gone = p.allGone()
	})
	return p.gone
}

// pollGone closes p.gone once a look finds everything gone.
func (p *Process) pollGone() {
	tick := time.NewTicker(stopPoll)
	defer tick.Stop()
	for {
		<-tick.C
		if p.allGone() {
			close(p.gone)
			return
		}
	}
}

func (p *Process) allGone() bool {
	r := p.reaper
	r.mu.Lock()
	defer r.mu.Unlock()
	targets, sure := p.targetsLocked()
	if p.killing {
		// What KillAll's looks missed (forked as it was killing, or
		// handed to lockex as its parent died) is found by these.
		for _, t := range targets {
			_ = syscall.Kill(t, syscall.SIGKILL)
		}
	}
	if len(targets) > 0 || !sure {
		return false
	}
	// What died since the wait4 in targetsLocked may be a zombie of ours
	// still: collect it, so that the workload's exit status is known.
	r.reapLocked()
	select {
	case <-p.done:
	default:
		// Not reaped, so not gone (targetsLocked missed it): nothing
		// may say otherwise while the main process may run.
		return false
	}
	// The workload's cgroup, where it has one, says for sure whether
	// anything of it is left: its list of processes, read like /proc,
	// may miss one that forked as it was read.
	if !p.forgetLocked() {
		if p.killing && p.cgroup != "" {
			_ = killCgroup(p.cgroup)
		}
		return false
	}
	// Nothing of it is left for Close to account for; its pidfd's
	// watcher has ended, or ends now that it exited.
	r.started = slices.DeleteFunc(r.started, func(q *Process) bool { return q == p })
	return true
}

// targetsLocked reaps, and lists what still runs under the lock: the
// workload's group (as -pgid), orphans and strays. It is not sure of the
// list when a child of lockex died since the reap: what it handed lockex
// may have come after /proc was listed. Called with r.mu held.
func (p *Process) targetsLocked() (targets []int, sure bool) {
	r := p.reaper
	left, _ := r.reapLocked()
	sure = true
	if !p.groupGone {
		members, alive := groupState(p.pid)
		switch {
		case alive:
			targets = append(targets, -p.pid)
		case members && !p.groupKilled:
			// Members, none seen alive: zombies, or one that forked and
			// exited while /proc was read, its child created after the
			// listing (a look at /proc is no snapshot). The members
			// hold the group's id, so it is still ours: SIGKILL to the
			// group kills whatever the look missed, and a fork in
			// progress with it, and no zombie minds. Only a look after
			// that may find the group empty.
			p.groupKilled = true
			_ = syscall.Kill(-p.pid, syscall.SIGKILL)
			targets = append(targets, -p.pid)
		default:
			// Once empty, the group's id may be reused by someone
			// else: never signal it again.
			p.groupGone = true
		}
	}
	if p.strayedMainLocked() {
		targets = append(targets, p.pid)
	}
	if left && r.orphans {
		children, dying := r.childrenLocked()
		targets, sure = append(targets, children...), !dying
	}
	return append(targets, p.strayedLocked(targets)...), sure
}

// strayedMainLocked reports whether the workload's main process runs, but
// not in its own process group: a group leader may not setsid, but may
// setpgid into another group of its session. Neither -pgid nor the orphan
// sweep (which skips the workload) reaches it then, nor, without a
// cgroup, anything else. It is lockex's child, not reaped (r.mu is held):
// its pid cannot have been reused.
func (p *Process) strayedMainLocked() bool {
	select {
	case <-p.done:
		return false
	default:
	}
	st, ok := statOf(p.pid)
	return ok && st.pgrp != p.pid && st.state != 'Z' && st.state != 'X'
}

func (p *Process) describeTargets(targets []int) []string {
	var names []string
	for _, t := range targets {
		if t == p.pid {
			names = append(names, "workload "+strconv.Itoa(t)+" (left its process group)")
			continue
		}
		names = append(names, describeTarget(t))
	}
	return names
}

// cgroupLive reports whether the workload's cgroup, or one under it, still
// holds a process that runs. A cgroup.events it cannot read (lockex out of
// descriptors, EMFILE) tells nothing, and may hide a daemon: live. One
// that is no more was empty when it went (rmdir fails on a populated
// cgroup), and nothing can enter it since.
func (p *Process) cgroupLive() bool {
	if p.cgroup == "" {
		return false
	}
	populated, err := cgroupPopulated(p.cgroup)
	return populated || err != nil && !errors.Is(err, fs.ErrNotExist)
}

// groupAlive reports whether process group pgid has a member that is not a
// zombie. kill(-pgid, 0) alone counts zombies too: a member orphaned to an
// init that is slow to reap (or never does, as some container inits) would
// hold the lock for nothing.
//
// A member that forks and exits while /proc is read may be missed, its
// child listed too late: false is only as good as that look.
func groupAlive(pgid int) bool {
	_, alive := groupState(pgid)
	return alive
}

// groupState reports whether process group pgid has members, and whether
// one was seen that is not a zombie (groupAlive).
//
// Only ESRCH means that no member is left. EPERM means that no member may
// be signalled by lockex (a setuid-root helper that became root, as sudo
// does, run by lockex as a user): the group is not gone, and the lock must
// not be released while it runs.
func groupState(pgid int) (members, alive bool) {
	if syscall.Kill(-pgid, 0) == syscall.ESRCH {
		return false, false
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return true, true
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, ok := statOf(pid); ok && st.pgrp == pgid && runs(pid, st) {
			return true, true
		}
	}
	return true, false
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
//
// A look at /proc is no snapshot: a child that forks and exits after the
// listing hands lockex a child the listing lacks. It is then a zombie
// (r.mu held, nobody reaps it), and dying says so: the list may be short.
// It says so too when /proc cannot be listed at all.
func (r *Reaper) childrenLocked() (pids []int, dying bool) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		r.log.Warn("cannot list orphans to stop", "err", err)
		return nil, true
	}
	self := os.Getpid()
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, ok := statOf(pid)
		switch {
		case !ok || st.ppid != self:
		case !runs(pid, st):
			dying = true
		case r.procs[pid] == nil:
			pids = append(pids, pid)
		}
	}
	return pids, dying
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
	b, err := readFile(path)
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
	if populated, err := cgroupPopulated(p.cgroup); err == nil && !populated {
		// Nothing runs in the subtree: one read instead of a walk.
		return nil
	}
	var pids []int
	_ = filepath.WalkDir(p.cgroup, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		b, err := readFile(filepath.Join(path, "cgroup.procs"))
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
