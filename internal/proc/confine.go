package proc

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"
)

// confinement is what makes "nothing outlives the lock" hold when lockex
// itself dies without stopping the workload. As PID 1 the kernel sees to
// it: every process of the namespace dies with lockex. Otherwise a
// guardian (guardian.go) kills the workload's process group, and its
// cgroup where lockex can make one (cgroup.go), which takes daemons that
// left the group too.
type confinement struct {
	// prepared is set once Prepare has tried; decided once Start has,
	// after which the guardian is what it is (restarts aside).
	prepared, decided bool
	guard             *guard // nil as PID 1, or if the guardian could not start
	err               error  // why there is no guardian

	cgroupParent string // where workloads' cgroups are made; "" if nowhere
	cgroupErr    error  // why workloads get no cgroup

	// closing is set once lockex is leaving, and the guardian with it.
	closing atomic.Bool
	// restarts counts the guardians started after one ended unasked.
	restarts int
}

// Prepare starts the guardian and finds where workloads' cgroups go, if
// that was not done yet, so that Start has only the workload to fork. The
// app calls it while lockex connects and waits for the lock: the
// guardian's fork and exec (a Go binary starting) then lies outside the
// handoff, at the price of a second process of a few MiB for every
// waiting lockex. It guards nothing until Start tells it a group, and
// reads end of file, with nothing to kill, if lockex dies while waiting.
func (r *Reaper) Prepare() {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := &r.confine
	if c.closing.Load() || c.prepared || c.decided {
		return
	}
	c.prepared = true
	r.tryGuardLocked()
}

// decideLocked makes sure a guardian was tried before the first workload.
// Prepare's try may be hours old and may have failed for a passing
// reason (descriptors, pids.max or RLIMIT_NPROC exhausted as a pod's
// containers start): one more try here costs a fork in the handoff only
// on that rare path, where the alternative is a workload unguarded for
// its whole run. r.mu is held.
func (r *Reaper) decideLocked() {
	c := &r.confine
	if c.decided {
		return
	}
	c.decided = true
	if c.prepared && (c.guard != nil || !r.guardWanted()) {
		return
	}
	prepareErr := c.err
	r.tryGuardLocked()
	if prepareErr != nil && c.guard != nil {
		r.log.Info("the guardian started at the second try", "guardian", c.guard.pid, "first_err", prepareErr)
	}
}

// guardWanted says whether a guardian that is not there could be: not
// as PID 1, which needs none, nor in a binary that cannot be one.
// r.mu is held.
func (r *Reaper) guardWanted() bool {
	c := &r.confine
	return os.Getpid() != 1 && !errors.Is(c.err, errCannotGuard) && !c.closing.Load()
}

// tryGuardLocked starts the guardian and finds the cgroup parent. r.mu is
// held.
func (r *Reaper) tryGuardLocked() {
	c := &r.confine
	if os.Getpid() == 1 {
		return
	}
	c.guard, c.err = r.startGuardLocked()
	if c.guard != nil {
		c.cgroupParent, c.cgroupErr = ownCgroup()
	}
}

// confineLocked returns the guardian, started now unless Prepare did, and
// a new cgroup for the next workload if lockex can make one. r.mu is held.
func (r *Reaper) confineLocked() (*guard, *cgroup) {
	c := &r.confine
	r.decideLocked()
	if c.guard == nil || c.cgroupParent == "" {
		return c.guard, nil
	}
	cg, err := newCgroup(c.cgroupParent)
	if err != nil {
		// Read-only, not ours, or too old a kernel: it will not get
		// better, and the workload runs without one.
		c.cgroupParent, c.cgroupErr = "", err
		return c.guard, nil
	}
	return c.guard, cg
}

// noCgroup gives up cgroups after one could not be forked into.
func (r *Reaper) noCgroup(cg *cgroup, err error) {
	cg.forked()
	_ = removeCgroup(cg.path)
	r.confine.guard.send("forget cgroup %s", cg.path)
	r.confine.cgroupParent, r.confine.cgroupErr = "", fmt.Errorf("fork into %s: %w", cg.path, err)
}

// sayConfinement logs, once, what happens to the workload p if lockex is
// killed: at info level when lockex cannot make sure nothing outlives it.
func (r *Reaper) sayConfinement(p *Process) {
	c := &r.confine
	switch {
	case os.Getpid() == 1:
	case c.guard == nil:
		r.log.Warn("if lockex is killed, what the workload runs in the background may outlive the lock: no guardian", "err", c.err)
	case p.cgroup == "":
		r.log.Info("if lockex is killed, its guardian kills the workload's process group, but not what left it (setsid): no cgroup of its own",
			"reason", c.cgroupErr)
	default:
		r.log.Debug("if lockex is killed, its guardian kills the workload's cgroup", "guardian", c.guard.pid, "cgroup", p.cgroup)
	}
}

// forgetLocked tells the guardian to forget p's process group once all of
// p is gone: from then on the group's id may be reused, and the guardian
// must not kill it. p's cgroup, found empty, goes to retireLocked. It
// reports whether all of p is gone. r.mu is held.
func (p *Process) forgetLocked() bool {
	g := p.reaper.confine.guard
	if g == nil {
		return true
	}
	select {
	case <-p.done:
	default:
		return false
	}
	if !p.groupForgotten {
		if groupAlive(p.pid) {
			return false
		}
		g.send("forget group %d", p.pid)
		p.groupForgotten = true
	}
	if p.cgroup != "" {
		if p.cgroupLive() {
			return false
		}
		// Empty, and nothing can enter it any more: it is removed later
		// (retireLocked), off the path from the workload's exit to the
		// release, where its rmdir took a fifth of a millisecond.
		p.reaper.emptied = append(p.reaper.emptied, p.cgroup)
		p.cgroup = ""
	}
	return true
}

// closeGuard lets the guardian go as lockex leaves. Whatever lockex
// started and is still running now (a daemon that left the workload's
// process group, where lockex could not stop it) is the guardian's to
// kill.
func (r *Reaper) closeGuard() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.confine.closing.Store(true) // and Prepare starts no guardian after this
	g := r.confine.guard
	if g == nil {
		return
	}
	r.reapLocked()
	done := true
	for _, p := range r.started {
		if !p.forgetLocked() {
			done = false
			r.log.Warn("started under the lock and still running as lockex exits; its guardian kills it", "process_group", p.pid, "cgroup", p.cgroup)
		}
	}
	r.retireLocked()
	g.close(done)
}

// retireLocked removes the cgroups of workloads that ended, found empty,
// and tells the guardian to forget them. Until then the guardian keeps
// them: should lockex die first, it kills what is in them, nothing, and
// removes them. r.mu is held.
func (r *Reaper) retireLocked() {
	for _, cg := range r.emptied {
		if err := removeCgroup(cg); err != nil {
			r.log.Warn("cannot remove the workload's cgroup", "cgroup", cg, "err", err)
		}
		r.confine.guard.send("forget cgroup %s", cg)
	}
	r.emptied = nil
}
