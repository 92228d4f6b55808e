package proc

import (
	"os"
	"sync/atomic"
)

// confinement is what makes "nothing outlives the lock" hold when lockex
// itself dies without stopping the workload. As PID 1 the kernel sees to
// it: every process of the namespace dies with lockex. Otherwise a
// guardian (guardian.go) kills the workload's process group.
type confinement struct {
	decided bool
	guard   *guard // nil as PID 1, or if the guardian could not start
	err     error  // why there is no guardian

	// closing is set once lockex is leaving, and the guardian with it.
	closing atomic.Bool
}

// confineLocked returns the guardian, started on the first call. r.mu is
// held.
func (r *Reaper) confineLocked() *guard {
	c := &r.confine
	if !c.decided {
		c.decided = true
		if os.Getpid() != 1 {
			c.guard, c.err = r.startGuardLocked()
		}
	}
	return c.guard
}

// sayConfinement logs, once, what happens to the workload p if lockex is
// killed: at info level when lockex cannot make sure nothing outlives it.
func (r *Reaper) sayConfinement(p *Process) {
	c := &r.confine
	switch {
	case os.Getpid() == 1:
	case c.guard == nil:
		r.log.Warn("if lockex is killed, what the workload runs in the background may outlive the lock: no guardian", "err", c.err)
	default:
		r.log.Info("if lockex is killed, its guardian kills the workload's process group, but not what left it (setsid)", "guardian", c.guard.pid)
	}
}

// forgetLocked tells the guardian to forget what p started once it is all
// gone: from then on its process group's id may be reused, and the
// guardian must not kill it. It reports whether all of it is gone. r.mu
// is held.
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
	return true
}

// closeGuard lets the guardian go as lockex leaves. Whatever lockex
// started and is still running now is the guardian's to kill.
func (r *Reaper) closeGuard() {
	r.mu.Lock()
	defer r.mu.Unlock()
	g := r.confine.guard
	if g == nil {
		return
	}
	r.confine.closing.Store(true)
	r.reapLocked()
	done := true
	for _, p := range r.started {
		if !p.forgetLocked() {
			done = false
			r.log.Warn("started under the lock and still running as lockex exits; its guardian kills it", "process_group", p.pid)
		}
	}
	g.close(done)
}
