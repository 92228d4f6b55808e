// Package status keeps what lockex reports in one place: the run's state,
// which the supervisor changes, and the ZooKeeper session's, which the
// session and the recipes see. Every change goes through the Recorder,
// which logs one line for it and passes it on to the metrics; the probes
// read a Snapshot. Logs, metrics and probes therefore never disagree.
package status

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/lockex/lockex/internal/exitcode"
	"github.com/lockex/lockex/internal/supervisor"
	"github.com/lockex/lockex/internal/zklock"
)

// Snapshot is the state at one moment.
type Snapshot struct {
	Lock       string // P
	MaxHolders int    // 1 for a mutex, N for a semaphore
	State      supervisor.State
	Since      time.Time // when State began
	// Connected: a live session that answers. Suspended: disconnected, but
	// the session may still be alive. SessionLost: it expired.
	Connected, Suspended, SessionLost bool
	// Silent: holding, and no evidence from zookeeper for half the
	// holder's budget (zklock.SessionObserver.Silent): a loss may follow.
	Silent bool
	Ahead  int // contenders ahead while waiting (mutex), once Queued
	// Queued is set once the recipe, waiting, has seen the lock taken.
	Queued     bool
	Contenders int // contenders (mutex) or lease holders (semaphore) last seen
	Node       string
	Token      int64
	Pid        int // the workload's, while it runs
	// LockLost is set once the lock was lost, and stays set; Loss says why.
	LockLost bool
	Loss     zklock.Loss
	// StopReason says why lockex stops the workload, in state Stopping.
	StopReason string
	// Round is the round under way (--requeue), or, in state Backoff, the
	// one that begins after Backoff.
	Round   int
	Backoff time.Duration
	// WaitedSinceStart is the time from lockex's start (from the round's,
	// with --requeue) until the lock was held.
	WaitedSinceStart time.Duration
	// Check names the workload's readiness check (--active-http or
	// --active-tcp), "" without one. WorkloadReady: the running workload
	// passed it (and has not failed it enough times since); CheckErr is the
	// last failure of this workload's check.
	Check         string
	WorkloadReady bool
	CheckErr      string
	// HealthCheck names the workload's health check (--health-url or
	// --health-cmd), "" without one. For the running workload: HealthOK,
	// its last check passed; HealthFailures, its consecutive failures that
	// count (of HealthThreshold); HealthErr, its last failure.
	HealthCheck     string
	HealthThreshold int
	HealthOK        bool
	HealthFailures  int
	HealthErr       string
	// Unhealthy is set once the workload was stopped for failing its
	// health check, and stays set.
	Unhealthy bool
	// StandbyCheck names the standby's own check (--standby-url or
	// --standby-cmd, docs/design.md §4.7), "" without one. Of the round
	// under way, while it is checked (states checking and waiting; kept
	// as they were once the lock is held): StandbyOK, its last check
	// passed; StandbyFit, it passed one and has not failed
	// StandbyThreshold in a row since, so it may queue; StandbyFailures,
	// its consecutive failures; StandbyErr, its last failure.
	StandbyCheck     string
	StandbyThreshold int
	StandbyOK        bool
	StandbyFit       bool
	StandbyFailures  int
	StandbyErr       string
	// StandbyLeft counts the times this run left the queue for its
	// standby check; StandbyLeftErr is why it left last.
	StandbyLeft    int
	StandbyLeftErr string
}

// StandbyReady reports whether the standby's own check lets it queue, in
// the states where that check decides: lockex_standby_ready.
func (s Snapshot) StandbyReady() bool {
	return s.StandbyCheck != "" && s.StandbyFit && (s.State == supervisor.Checking || s.State == supervisor.Waiting)
}

// Healthy reports whether the workload runs and, with a health check,
// passed its last check: lockex_workload_healthy.
func (s Snapshot) Healthy() bool {
	return s.State == supervisor.Running && (s.HealthCheck == "" || s.HealthOK)
}

// Active reports what /active answers: the workload runs under the lock
// and, with a check, has passed it.
func (s Snapshot) Active() bool {
	return s.State == supervisor.Running && (s.Check == "" || s.WorkloadReady)
}

// SessionGone reports whether the session expired, or may have: a loss by
// expiry or by the suspend deadline, not by a deleted node.
func (s Snapshot) SessionGone() bool {
	return s.SessionLost || (s.LockLost && s.Loss != zklock.NodeDeleted)
}

// Held reports whether this instance holds the lock or a lease.
func (s Snapshot) Held() bool {
	return s.State == supervisor.Holding || s.State == supervisor.Running || s.State == supervisor.Stopping
}

// Event is what changed, for the metrics that count changes.
type Event int

const (
	EvOther Event = iota
	EvAcquired
	EvLost
	EvDisconnected
	EvExpired
	EvMaxRuntime     // lockex began to stop a workload that ran for --max-runtime
	EvRequeued       // --requeue began another round
	EvHealthFailed   // one failed health check
	EvUnhealthy      // lockex began to stop a workload that failed its health check
	EvEarlierDeleted // a node of this container's dead earlier incarnation was deleted
	EvStandbyFailed  // one failed standby check
)

// Recorder owns the state. It is the supervisor's Observer and the
// session's; each of its methods may be called from any goroutine.
type Recorder struct {
	log *slog.Logger
	// changed is told of every change, with the state after it, in order
	// (the metrics).
	changed func(Event, Snapshot)

	mu sync.Mutex
	s  Snapshot
	// started is when lockex, or with --requeue the round, started.
	started time.Time
}

var (
	_ supervisor.Observer    = (*Recorder)(nil)
	_ zklock.SessionObserver = (*Recorder)(nil)
)

// New returns a Recorder for lock P; changed, if not nil, is told of every
// change.
func New(log *slog.Logger, lock string, maxHolders int, changed func(Event, Snapshot)) *Recorder {
	now := time.Now()
	if changed == nil {
		changed = func(Event, Snapshot) {}
	}
	return &Recorder{
		log: log, started: now, changed: changed,
		s: Snapshot{Lock: lock, MaxHolders: maxHolders, State: supervisor.Starting, Since: now},
	}
}

// Snapshot is the state now.
func (r *Recorder) Snapshot() Snapshot {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.s
}

// update applies f to the state under the lock, passes the change on, and
// returns the state after it.
func (r *Recorder) update(ev Event, f func(s *Snapshot)) Snapshot {
	r.mu.Lock()
	defer r.mu.Unlock()
	f(&r.s)
	r.changed(ev, r.s)
	return r.s
}

// Changed records one of the supervisor's changes and logs it, in one line.
func (r *Recorder) Changed(ch supervisor.Change) {
	ev := EvOther
	switch ch.To {
	case supervisor.Holding:
		if ch.From == supervisor.Waiting {
			ev = EvAcquired
		}
	case supervisor.Lost:
		ev = EvLost
	case supervisor.Stopping:
		switch {
		case errors.Is(ch.Err, supervisor.ErrMaxRuntime):
			ev = EvMaxRuntime
		case errors.Is(ch.Err, supervisor.ErrUnhealthy):
			ev = EvUnhealthy
		}
	case supervisor.Connecting:
		if ch.From == supervisor.Backoff {
			ev = EvRequeued
		}
	}
	now := time.Now()
	r.update(ev, func(s *Snapshot) {
		s.State, s.Since = ch.To, ch.At
		switch ch.To {
		case supervisor.Connecting:
			s.Round = ch.Round
			if errors.Is(ch.Err, supervisor.ErrStandbyUnfit) {
				s.StandbyFit, s.StandbyLeft, s.StandbyLeftErr = false, s.StandbyLeft+1, ch.Err.Error()
				// Its session is being replaced: closed first, quietly.
				s.Connected, s.Suspended = false, false
			}
			if ch.From == supervisor.Backoff {
				r.started = now
				// A new round, with a session of its own: what was
				// sticky for the last round's (§8) is not for this one,
				// and the last round's, kept through the backoff, is
				// being closed.
				s.Queued, s.LockLost, s.Loss, s.SessionLost, s.Node, s.Token = false, false, 0, false, "", 0
				s.Unhealthy, s.StopReason = false, ""
				// The standby is checked afresh in each round.
				s.StandbyOK, s.StandbyFit, s.StandbyFailures, s.StandbyErr = false, false, 0, ""
				s.Connected, s.Suspended = false, false
			}
		case supervisor.Backoff:
			s.Round, s.Backoff = ch.Round, ch.Backoff
			if ch.SessionClosed {
				s.Connected, s.Suspended = false, false
			}
		case supervisor.Waiting:
			s.Queued = false
		case supervisor.Holding:
			s.Pid = 0
			if ch.From == supervisor.Waiting {
				s.Silent = false // a new lease; the last one's silence ended with it
				s.Node, s.Token, s.Ahead, s.WaitedSinceStart = ch.Node, ch.Token, 0, now.Sub(r.started)
			}
		case supervisor.Running:
			s.Pid = ch.Pid
			s.HealthOK, s.HealthFailures, s.HealthErr = false, 0, ""
		case supervisor.Lost:
			s.Pid, s.LockLost, s.Loss = 0, true, zklock.LossOf(ch.Err)
		case supervisor.Stopping:
			s.Pid, s.StopReason = 0, ch.Err.Error()
			if errors.Is(ch.Err, supervisor.ErrUnhealthy) {
				s.Unhealthy, s.HealthOK, s.HealthErr = true, false, ch.Err.Error()
			}
		}
		if ch.To != supervisor.Running {
			s.WorkloadReady, s.CheckErr = false, ""
		}
	})
	r.logChange(ch)
}

func (r *Recorder) logChange(ch supervisor.Change) {
	var stopping []any
	if len(ch.Stopping) > 0 {
		stopping = []any{"stopping", ch.Stopping}
	}
	switch ch.To {
	case supervisor.Holding:
		if ch.From == supervisor.Waiting {
			r.log.Info("lock acquired", "node", ch.Node, "fencing_token", ch.Token, "waited", ch.Waited.Round(time.Millisecond))
			return
		}
		attrs := append([]any{"code", ch.WorkloadCode}, stopping...)
		if ch.MinHold > 0 {
			attrs = append(attrs, "min_hold_remaining", ch.MinHold.Round(time.Millisecond))
		}
		r.log.Info("workload exited", attrs...)
	case supervisor.Running:
		r.log.Info("workload started", "pid", ch.Pid)
	case supervisor.Checking:
		r.log.Info("checking this standby before it queues", "check", r.Snapshot().StandbyCheck)
	case supervisor.Waiting:
		if ch.From == supervisor.Checking {
			r.log.Info("standby check passed; queueing for the lock", "check", r.Snapshot().StandbyCheck)
		}
	case supervisor.Connecting:
		if errors.Is(ch.Err, supervisor.ErrStandbyUnfit) {
			r.log.Warn("standby check failed; left the queue", "err", ch.Err)
		}
	case supervisor.Stopping:
		var minHold []any
		if ch.MinHold > 0 {
			minHold = []any{"min_hold_remaining", ch.MinHold.Round(time.Millisecond)}
		}
		if errors.Is(ch.Err, supervisor.ErrUnhealthy) {
			attrs := slices.Concat([]any{"pid", ch.Pid, "err", ch.Err}, stopping, minHold)
			r.log.Error("workload unhealthy; stopping it and releasing the lock", attrs...)
			return
		}
		r.log.Warn("stopping the workload", slices.Concat([]any{"reason", ch.Err}, stopping, minHold)...)
	case supervisor.Lost:
		attrs := append([]any{"reason", zklock.LossOf(ch.Err).String(), "err", ch.Err}, stopping...)
		if ch.Late > 0 {
			// Noticed after the session may have expired: no grace.
			attrs = append(attrs, "signal", "SIGKILL", "late", ch.Late.Round(time.Millisecond))
		}
		r.log.Error("lock lost; stopping the workload", attrs...)
	case supervisor.Released:
		var stop supervisor.StoppedBy
		var attrs []any
		if ch.ReleaseErr != nil {
			attrs = []any{"node_not_deleted", ch.ReleaseErr}
		}
		switch {
		case errors.As(ch.Err, &stop):
			r.log.Warn("stopped before the workload started; lock released", append(attrs, "signal", stop.Signal.String())...)
		case ch.Err != nil:
			r.log.Error("workload did not start; lock released", append(attrs, "err", ch.Err)...)
		case ch.ReleaseErr != nil:
			r.log.Warn("lock node not deleted; the session's end removes it", "node", r.Snapshot().Node, "err", ch.ReleaseErr)
		default:
			r.log.Info("lock released", "code", ch.Code)
		}
	case supervisor.Backoff:
		r.log.Info("contending again after the backoff", "backoff", ch.Backoff, "round", ch.Round)
	case supervisor.GaveUp:
		var stop supervisor.StoppedBy
		switch {
		case errors.As(ch.Err, &stop) && ch.From == supervisor.Backoff:
			r.log.Warn("stopped between rounds", "signal", stop.Signal.String())
		case errors.As(ch.Err, &stop):
			r.log.Warn("stopped while waiting for the lock", "signal", stop.Signal.String())
		case errors.Is(ch.Err, supervisor.ErrLockTimeout), errors.Is(ch.Err, supervisor.ErrStandbyUnfit):
			r.log.Warn("lock not acquired", "reason", ch.Err)
		case exitcode.Of(ch.Err) == exitcode.Busy:
			r.log.Warn("lock not acquired", "reason", "taken, and --no-blocking or -t 0", "err", ch.Err)
		default:
			r.log.Error("lock not acquired", "err", ch.Err)
		}
	}
}

// CheckWith names the workload's readiness check; without one, /active
// follows the workload's process alone. Called before the run starts.
func (r *Recorder) CheckWith(check string) {
	r.update(EvOther, func(s *Snapshot) { s.Check = check })
}

// WorkloadChecked records a check of workload pid: whether it is ready now,
// and the check's failure if it failed. A result for a workload that no
// longer runs is dropped. A change of readiness is logged, once.
func (r *Recorder) WorkloadChecked(pid int, ready bool, err error) {
	var was bool
	var applied bool
	s := r.update(EvOther, func(s *Snapshot) {
		if s.State != supervisor.Running || s.Pid != pid {
			return
		}
		applied, was = true, s.WorkloadReady
		s.WorkloadReady, s.CheckErr = ready, ""
		if err != nil {
			s.CheckErr = err.Error()
		}
	})
	switch {
	case !applied || was == ready:
	case ready:
		r.log.Info("workload ready; active", "check", s.Check, "pid", pid)
	default:
		r.log.Warn("workload not ready; not active", "check", s.Check, "pid", pid, "err", err)
	}
}

// HealthCheckWith names the workload's health check and the failures in a
// row that stop it. Called before the run starts.
func (r *Recorder) HealthCheckWith(check string, threshold int) {
	r.update(EvOther, func(s *Snapshot) { s.HealthCheck, s.HealthThreshold = check, threshold })
}

// HealthChecked records a health check of workload pid: failures is its
// count of consecutive failures that count, err this check's failure. A
// result for a workload that no longer runs is dropped. Each failure that
// counts is logged (a few, before the workload is stopped), one that does
// not yet (the start period) at debug, and the first pass after failures.
func (r *Recorder) HealthChecked(pid, failures int, err error) {
	var applied, wasOK bool
	ev := EvOther
	if err != nil {
		ev = EvHealthFailed
	}
	var s Snapshot
	r.mu.Lock()
	if r.s.State == supervisor.Running && r.s.Pid == pid {
		applied, wasOK = true, r.s.HealthOK || r.s.HealthErr == ""
		r.s.HealthOK, r.s.HealthFailures, r.s.HealthErr = err == nil, failures, ""
		if err != nil {
			r.s.HealthErr = err.Error()
		}
		r.changed(ev, r.s)
	}
	s = r.s
	r.mu.Unlock()
	switch {
	case !applied:
	case err != nil && failures > 0:
		r.log.Warn("health check failed", "check", s.HealthCheck, "pid", pid, "failures", failures, "threshold", s.HealthThreshold, "err", err)
	case err != nil:
		r.log.Debug("health check failed within the start period; not counted", "check", s.HealthCheck, "pid", pid, "err", err)
	case !wasOK:
		r.log.Info("health check passed", "check", s.HealthCheck, "pid", pid)
	}
}

// StandbyCheckWith names the standby's own check and the failures in a row
// that take it out of the queue. Called before the run starts.
func (r *Recorder) StandbyCheckWith(check string, threshold int) {
	r.update(EvOther, func(s *Snapshot) { s.StandbyCheck, s.StandbyThreshold = check, threshold })
}

// StandbyChecked records a standby check of round: fit, whether it may
// queue after it; failures, its consecutive failures; err, this check's
// failure. A result of another round, or one that comes once the check no
// longer decides (the lock held, the round over), is dropped. Nothing is
// logged: the supervisor's changes (checking, queueing, leaving) are.
func (r *Recorder) StandbyChecked(round int, fit bool, failures int, err error) {
	ev := EvOther
	if err != nil {
		ev = EvStandbyFailed
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	st := r.s.State
	if r.s.Round != round || (st != supervisor.Checking && st != supervisor.Waiting && st != supervisor.Connecting) {
		return
	}
	r.s.StandbyOK, r.s.StandbyFit, r.s.StandbyFailures, r.s.StandbyErr = err == nil, fit, failures, ""
	if err != nil {
		r.s.StandbyErr = err.Error()
	}
	r.changed(ev, r.s)
}

// Connecting, Connected, Disconnected, Reconnected, Silent, Expired,
// Contenders, Waiting and EarlierDeleted implement zklock.SessionObserver.

func (r *Recorder) Connecting(servers []string, timeout time.Duration) {
	r.log.Info("connecting to zookeeper", "servers", servers, "session_timeout", timeout)
}

func (r *Recorder) Connected(server string, session int64, granted time.Duration) {
	r.update(EvOther, func(s *Snapshot) { s.Connected, s.Suspended = true, false })
	r.log.Info("connected to zookeeper", "server", server, "session_id", fmt.Sprintf("%#x", session), "session_timeout", granted)
}

func (r *Recorder) Disconnected() {
	s := r.update(EvDisconnected, func(s *Snapshot) { s.Connected, s.Suspended = false, true })
	if s.Held() {
		r.log.Warn("suspended: disconnected from zookeeper; the workload runs on while the session may be alive")
		return
	}
	r.log.Warn("suspended: disconnected from zookeeper")
}

func (r *Recorder) Reconnected(server string) {
	r.update(EvOther, func(s *Snapshot) { s.Connected, s.Suspended = true, false })
	r.log.Info("reconnected to zookeeper with the same session", "server", server)
}

func (r *Recorder) Silent(silent bool) {
	r.update(EvOther, func(s *Snapshot) { s.Silent = silent })
	if silent {
		r.log.Warn("no word from zookeeper for half the holder's budget; the lock may be lost")
		return
	}
	r.log.Info("zookeeper answers again")
}

func (r *Recorder) Expired() {
	r.update(EvExpired, func(s *Snapshot) { s.Connected, s.Suspended, s.SessionLost = false, false, true })
	r.log.Error("zookeeper session expired")
}

// Contenders records how many contenders (or lease holders) were seen.
func (r *Recorder) Contenders(n int) {
	r.update(EvOther, func(s *Snapshot) { s.Contenders = n })
}

// Waiting records that the lock is taken and how many are ahead.
func (r *Recorder) Waiting(ahead int) {
	s := r.update(EvOther, func(s *Snapshot) { s.Ahead, s.Queued = ahead, true })
	if s.MaxHolders > 1 {
		r.log.Info("waiting for a lease", "held", s.Contenders, "size", s.MaxHolders)
		return
	}
	r.log.Info("waiting for the lock", "ahead", ahead)
}

// EarlierDeleted records that a node of this container's earlier, dead
// incarnation was deleted, so that the next in line took over at once.
func (r *Recorder) EarlierDeleted(node, identifier string, session int64) {
	r.update(EvEarlierDeleted, func(*Snapshot) {})
	r.log.Info("deleted the node of this container's earlier incarnation, which is dead; the next in line need not wait for its session to expire",
		"node", node, "identifier", identifier, "session_id", fmt.Sprintf("%#x", session))
}

// Describe says the state in a few words, for the probes' bodies.
func (s Snapshot) Describe() string {
	var d string
	switch s.State {
	case supervisor.Starting, supervisor.Connecting:
		d = "connecting to zookeeper for " + s.Lock
	case supervisor.Checking:
		d = "checking this standby before it queues for " + s.Lock
		if s.StandbyErr != "" {
			d += fmt.Sprintf(" (failed %d in a row: %s)", s.StandbyFailures, s.StandbyErr)
		}
	case supervisor.Waiting:
		switch {
		case !s.Queued:
			d = "waiting for " + s.Lock
		case s.MaxHolders > 1:
			d = fmt.Sprintf("waiting for a lease of %s (%d of %d held)", s.Lock, s.Contenders, s.MaxHolders)
		default:
			d = fmt.Sprintf("waiting for %s (%d contenders ahead)", s.Lock, s.Ahead)
		}
	case supervisor.Holding:
		d = fmt.Sprintf("holding %s as %s (fencing token %d); workload not running", s.Lock, s.Node, s.Token)
	case supervisor.Running:
		d = fmt.Sprintf("holding %s as %s (fencing token %d); workload pid %d running", s.Lock, s.Node, s.Token, s.Pid)
		switch {
		case s.Check == "":
		case s.WorkloadReady:
			d += ", ready (" + s.Check + ")"
		case s.CheckErr == "":
			d += ", not ready yet (" + s.Check + ")"
		default:
			d += ", not ready (" + s.CheckErr + ")"
		}
		if s.HealthCheck != "" && s.HealthFailures > 0 {
			d += fmt.Sprintf(", health check failed %d of %d (%s)", s.HealthFailures, s.HealthThreshold, s.HealthErr)
		}
	case supervisor.Stopping:
		d = fmt.Sprintf("holding %s as %s (fencing token %d); stopping the workload (%s)", s.Lock, s.Node, s.Token, s.StopReason)
		if s.Unhealthy {
			d = fmt.Sprintf("holding %s as %s (fencing token %d); %s; stopping it", s.Lock, s.Node, s.Token, s.HealthErr)
		}
	case supervisor.Lost:
		d = fmt.Sprintf("lost %s (%s); stopping the workload", s.Lock, s.Loss)
	case supervisor.Released:
		d = "released " + s.Lock
		switch {
		case s.LockLost:
			d = fmt.Sprintf("lost %s (%s); released", s.Lock, s.Loss)
		case s.Unhealthy:
			d = "released " + s.Lock + "; workload unhealthy"
		}
	case supervisor.GaveUp:
		d = "gave up waiting for " + s.Lock
	case supervisor.Backoff:
		d = fmt.Sprintf("released %s; contending again after %s (round %d)", s.Lock, s.Backoff, s.Round)
	}
	switch {
	case s.SessionLost:
		d += "; zookeeper session expired"
	case s.Suspended:
		d += "; disconnected from zookeeper (suspended)"
	}
	return d
}
