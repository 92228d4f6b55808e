// Package status keeps lockex's state in one place: the ZooKeeper session,
// the lock and the workload. Every change goes through the Recorder, which
// logs one line for it and tells its observers (the metrics); the probes
// read a Snapshot. Logs, metrics and probes therefore never disagree.
package status

import (
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// Phase is where lockex is in its run.
type Phase int

const (
	Starting   Phase = iota
	Connecting       // reaching ZooKeeper
	Waiting          // queued for the lock
	Holding          // lock held, workload not running (yet, or any more)
	Running          // lock held, workload running
	Lost             // lock lost; the workload is being stopped
	Released         // lock given back
)

var phaseNames = [...]string{"starting", "connecting", "waiting", "holding", "running", "lost", "released"}

func (p Phase) String() string { return phaseNames[p] }

// Snapshot is the state at one moment.
type Snapshot struct {
	Lock       string // P
	MaxHolders int    // 1 for a mutex, N for a semaphore
	Phase      Phase
	Since      time.Time // when Phase began
	// Connected: a live session that answers. Suspended: disconnected, but
	// the session may still be alive. SessionLost: it expired.
	Connected, Suspended, SessionLost bool
	Ahead                             int // contenders ahead while waiting (mutex)
	Contenders                        int // contenders (mutex) or lease holders (semaphore) last seen
	Node                              string
	Token                             int64
	Pid                               int    // the workload's, while it runs
	LostReason                        string // session_expired, node_deleted or suspend_deadline
}

// SessionGone reports whether the session expired, or may have: the loss
// was by expiry or by the suspend deadline, not by a deleted node.
func (s Snapshot) SessionGone() bool {
	return s.SessionLost || (s.Phase == Lost && s.LostReason != "node_deleted")
}

// Held reports whether this instance holds the lock or a lease.
func (s Snapshot) Held() bool { return s.Phase == Holding || s.Phase == Running }

// Event is the kind of a change, for observers that count.
type Event int

const (
	EvConnecting Event = iota
	EvConnected
	EvDisconnected
	EvReconnected
	EvExpired
	EvWaiting
	EvAcquired
	EvStarted
	EvExited
	EvLost
	EvReleased
)

// Change is one state change.
type Change struct {
	Event  Event
	Waited time.Duration // EvAcquired: since lockex started
}

// Observer is told of every change, with the state after it, in order.
type Observer interface {
	Observe(Change, Snapshot)
}

// Recorder owns the state. Its methods are the state changes; each may be
// called from any goroutine.
type Recorder struct {
	log     *slog.Logger
	started time.Time
	reason  func(error) string
	obs     []Observer

	mu sync.Mutex
	s  Snapshot
}

// New returns a Recorder for lock P. reason names a loss's cause for the
// metrics' reason label.
func New(log *slog.Logger, lock string, maxHolders int, reason func(error) string, obs ...Observer) *Recorder {
	now := time.Now()
	return &Recorder{
		log: log, started: now, reason: reason, obs: obs,
		s: Snapshot{Lock: lock, MaxHolders: maxHolders, Phase: Starting, Since: now},
	}
}

// Snapshot is the state now.
func (r *Recorder) Snapshot() Snapshot {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.s
}

// change applies f to the state under the lock and tells the observers.
func (r *Recorder) change(ev Change, f func(s *Snapshot)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	before := r.s.Phase
	f(&r.s)
	if r.s.Phase != before {
		r.s.Since = time.Now()
	}
	for _, o := range r.obs {
		o.Observe(ev, r.s)
	}
}

func (r *Recorder) Connecting(servers []string, timeout time.Duration) {
	r.change(Change{Event: EvConnecting}, func(s *Snapshot) { s.Phase = Connecting })
	r.log.Info("connecting to zookeeper", "servers", servers, "session_timeout", timeout)
}

func (r *Recorder) Connected(server string, session int64, granted time.Duration) {
	r.change(Change{Event: EvConnected}, func(s *Snapshot) { s.Connected, s.Suspended = true, false })
	r.log.Info("connected to zookeeper", "server", server, "session_id", fmt.Sprintf("%#x", session), "session_timeout", granted)
}

func (r *Recorder) Disconnected() {
	r.change(Change{Event: EvDisconnected}, func(s *Snapshot) { s.Connected, s.Suspended = false, true })
	if r.Snapshot().Held() {
		r.log.Warn("suspended: disconnected from zookeeper; the workload runs on while the session may be alive")
		return
	}
	r.log.Warn("suspended: disconnected from zookeeper")
}

func (r *Recorder) Reconnected(server string) {
	r.change(Change{Event: EvReconnected}, func(s *Snapshot) { s.Connected, s.Suspended = true, false })
	r.log.Info("reconnected to zookeeper with the same session", "server", server)
}

func (r *Recorder) Expired() {
	r.change(Change{Event: EvExpired}, func(s *Snapshot) { s.Connected, s.Suspended, s.SessionLost = false, false, true })
	r.log.Error("zookeeper session expired")
}

// Contenders records how many contenders (or lease holders) were seen.
func (r *Recorder) Contenders(n int) {
	r.change(Change{Event: EvWaiting}, func(s *Snapshot) { s.Contenders = n })
}

// Waiting records that the lock is taken and how many are ahead.
func (r *Recorder) Waiting(ahead int) {
	r.change(Change{Event: EvWaiting}, func(s *Snapshot) { s.Phase, s.Ahead = Waiting, ahead })
	snap := r.Snapshot()
	if snap.MaxHolders > 1 {
		r.log.Info("waiting for a lease", "held", snap.Contenders, "size", snap.MaxHolders)
		return
	}
	r.log.Info("waiting for the lock", "ahead", ahead)
}

func (r *Recorder) Acquired(node string, token int64, waited time.Duration) {
	sinceStart := time.Since(r.started)
	r.change(Change{Event: EvAcquired, Waited: sinceStart}, func(s *Snapshot) {
		s.Phase, s.Node, s.Token, s.Ahead = Holding, node, token, 0
	})
	r.log.Info("lock acquired", "node", node, "fencing_token", token, "waited", waited.Round(time.Millisecond))
}

func (r *Recorder) WorkloadStarted(pid int) {
	r.change(Change{Event: EvStarted}, func(s *Snapshot) { s.Phase, s.Pid = Running, pid })
	r.log.Info("workload started", "pid", pid)
}

func (r *Recorder) WorkloadExited(code int) {
	r.change(Change{Event: EvExited}, func(s *Snapshot) {
		if s.Phase == Running {
			s.Phase = Holding
		}
		s.Pid = 0
	})
	r.log.Info("workload exited", "code", code)
}

// Lost records that the lock is lost, or about to be, and why.
func (r *Recorder) Lost(err error) {
	reason := r.reason(err)
	r.change(Change{Event: EvLost}, func(s *Snapshot) { s.Phase, s.LostReason = Lost, reason })
	r.log.Error("lock lost; stopping the workload", "reason", reason, "err", err)
}

func (r *Recorder) Released() {
	r.change(Change{Event: EvReleased}, func(s *Snapshot) {
		if s.Phase != Lost {
			s.Phase = Released
		}
	})
	r.log.Info("lock released")
}

// Describe says the state in a few words, for the probes' bodies.
func (s Snapshot) Describe() string {
	var d string
	switch s.Phase {
	case Starting, Connecting:
		d = "connecting to zookeeper for " + s.Lock
	case Waiting:
		if s.MaxHolders > 1 {
			d = fmt.Sprintf("waiting for a lease of %s (%d of %d held)", s.Lock, s.Contenders, s.MaxHolders)
		} else {
			d = fmt.Sprintf("waiting for %s (%d contenders ahead)", s.Lock, s.Ahead)
		}
	case Holding:
		d = fmt.Sprintf("holding %s as %s (fencing token %d); workload not running", s.Lock, s.Node, s.Token)
	case Running:
		d = fmt.Sprintf("holding %s as %s (fencing token %d); workload pid %d running", s.Lock, s.Node, s.Token, s.Pid)
	case Lost:
		d = fmt.Sprintf("lost %s (%s); stopping the workload", s.Lock, s.LostReason)
	case Released:
		d = "released " + s.Lock
	}
	switch {
	case s.SessionLost:
		d += "; zookeeper session expired"
	case s.Suspended:
		d += "; disconnected from zookeeper (suspended)"
	}
	return d
}
