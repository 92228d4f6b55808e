package zklock

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-zookeeper/zk"
)

// The ways a held lease is lost. Each closes Done at once; docs/design.md §5.4.
var (
	// ErrSessionExpired: the server expired the session, and with it the
	// node; another contender may hold the lock already.
	ErrSessionExpired = errors.New("zklock: session expired")
	// ErrSuspendedTooLong: nothing has shown for so long that the leader
	// still has the session that it may expire it before the holder could
	// stop (wire.go says what counts).
	ErrSuspendedTooLong = errors.New("zklock: no answer from zookeeper for too long")
	// ErrNodeDeleted: the own node is gone or belongs to another session.
	ErrNodeDeleted = errors.New("zklock: own lock node deleted")
)

// Lease is a held lock or semaphore lease. From the moment it is handed
// out it watches for its own loss.
type Lease struct {
	s          *Session
	path, node string
	data       atomic.Pointer[[]byte] // node's data, written again by every beat
	// stamp, if set, is Options.HeldSince: a mutex holder's node says when
	// it got the lock (docs/design.md §3.2).
	stamp    func(data []byte, since time.Time) []byte
	token    int64
	waited   time.Duration
	session  int64 // the ephemeralOwner of node
	expiries int   // the session's expiry count when the node was held

	done     chan struct{}
	lost     sync.Once
	err      error
	release  chan struct{} // closes when Release starts: the watch ends
	released sync.Once
}

func newLease(s *Session, path, node string, data []byte, stat *zk.Stat, waited time.Duration,
	stamp func([]byte, time.Time) []byte) *Lease {
	_, expiries, _ := s.current()
	l := &Lease{
		s: s, path: path, node: node, token: stat.Czxid, waited: waited,
		session: stat.EphemeralOwner, expiries: expiries, stamp: stamp,
		done: make(chan struct{}), release: make(chan struct{}),
	}
	l.data.Store(&data)
	// A waiter's session sends syncs but no writes, so the evidence is as
	// old as its last write (its create, in a mutex), and after a long
	// wait the deadline may be near or past: then one beat, before the
	// lease counts, brings the evidence to the last sync (wire.go, E2).
	// While the evidence is younger than half the budget (as aging
	// counts, the watchdog's measure), the lease counts at once and the
	// beat goes out beside the workload's start: the deadline already
	// stands at least half the budget away, by the same evidence rule
	// that bounds every holder for as long as it holds, and watchDeadline
	// stops the workload on it, by KillBy, if no beat ever confirms newer
	// evidence (an isolated follower).
	// The node's watch is set after the beat's answer: set before, it
	// would fire on the beat's own write and be set again. The beat's
	// answer shows the node's owner meanwhile.
	if l.s.live.aging(time.Now()) {
		l.firstBeat()
		go l.watchNode()
	} else {
		go func() {
			l.firstBeat()
			l.watchNode()
		}()
	}
	// A beat that failed (no write committed) leaves the evidence where it
	// was: a deadline that has passed already ends the lease before it
	// is handed out, not a moment after the workload started.
	if err := l.overdue(time.Now()); err != nil {
		l.lose(err)
	}
	go l.watchSession()
	go l.watchDeadline()
	return l
}

// Path is P, the lock's znode, as the client sees it (inside the chroot).
func (l *Lease) Path() string { return l.path }

// Node is this holder's own znode, as the client sees it.
func (l *Lease) Node() string { return l.node }

// Token is Node's czxid: it grows with every new holder, so a resource can
// refuse writes from a holder older than the newest it has seen.
func (l *Lease) Token() int64 { return l.token }

// Waited is how long acquiring took.
func (l *Lease) Waited() time.Duration { return l.waited }

// Done closes when the lease is lost, or is about to be: the holder must
// stop its work now (it has Options.StopGrace to do so). Err says why.
func (l *Lease) Done() <-chan struct{} { return l.done }

// Err is why Done closed: it wraps ErrSessionExpired, ErrSuspendedTooLong
// or ErrNodeDeleted. It is nil while Done is open.
func (l *Lease) Err() error {
	select {
	case <-l.done:
		return l.err
	default:
		return nil
	}
}

// lose ends the lease with err, unless it was given back: a released
// lease has nothing left to lose, and its own delete would otherwise show
// as a loss to a watcher still running.
func (l *Lease) lose(err error) {
	select {
	case <-l.release:
		return
	default:
	}
	l.lost.Do(func() {
		l.err = err
		close(l.done)
	})
}

// Release deletes the holder's node at once, so the next contender need not
// wait for the session to end. It returns without waiting longer than the
// connect timeout; closing the session then removes the node all the same.
// A lost lease has nothing left to delete that closing the session would
// not remove.
func (l *Lease) Release() error {
	l.released.Do(func() { close(l.release) })
	if l.Err() != nil {
		return nil
	}
	return l.s.deleteNode(l.node)
}

// watchNode ends the lease when the own node is deleted, by an operator or
// by the server when the session expires.
func (l *Lease) watchNode() {
	for {
		ok, stat, events, err := l.s.conn.ExistsW(l.s.abs(l.node))
		if err != nil {
			// Connection trouble: watchDeadline keeps the time; look again
			// once the session changes state.
			_, _, changed := l.s.current()
			select {
			case <-changed:
				continue
			case <-l.release:
				return
			}
		}
		if err := l.check(ok, stat); err != nil {
			l.lose(err)
			return
		}
		select {
		case ev := <-events:
			if ev.Type == zk.EventNodeDeleted {
				l.lose(l.cause(fmt.Errorf("%w: %s", ErrNodeDeleted, l.node)))
				return
			}
			// The watch ended without the deletion (the session expired or
			// is closing): set it again, or learn why not.
		case <-l.release:
			return
		}
	}
}

// watchSession ends the lease when the session expires, and after every
// reconnect checks that the node is still there and still this session's
// before the lease counts as held again (Curator's CURATOR-696 fix: a
// reconnect alone proves nothing about the node).
func (l *Lease) watchSession() {
	suspended := false
	for {
		state, expiries, changed := l.s.current()
		switch {
		case expiries > l.expiries || state == zk.StateExpired:
			l.lose(fmt.Errorf("%w: session %#x", ErrSessionExpired, l.session))
			return
		case l.Err() != nil:
			return // lost already; nothing more to say
		case state == zk.StateHasSession && suspended:
			suspended = false
			// Also the write that lets the new connection's connect
			// answer count as evidence (wire.go, E1).
			l.beat()
			if l.Err() != nil {
				return
			}
		case state != zk.StateHasSession && !suspended:
			suspended = true
			_, evidence := l.s.live.snapshot()
			l.s.log.Debug("suspended while holding", "stop_in", time.Until(l.deadline(evidence)).Round(time.Millisecond))
		}
		select {
		case <-changed:
		case <-l.release:
			return
		}
	}
}

// watchDeadline ends the lease when nothing has shown for so long that the
// leader still has the session that it could expire it before the holder
// stops: at evidence + granted − StopGrace − granted/10 (docs/design.md §5.3),
// where evidence is the latest moment the leader is known to have renewed
// the session after (wire.go). While connected, it also beats: it writes
// the node every granted/heartbeats, which shows the node's owner and,
// with the session's syncs, keeps the evidence fresh.
func (l *Lease) watchDeadline() {
	heartbeat := time.NewTicker(max(l.s.Granted()/heartbeats, time.Millisecond))
	defer heartbeat.Stop()
	timer := time.NewTimer(0)
	defer timer.Stop()
	// silent is what the observer was last told (Silent): evidence older
	// than half the budget warns of the deadline while there is time to
	// act on it (a pod's label drained before the stop), checked at each
	// heartbeat, and the warning ends once it is young again (silence).
	silent := false
	for {
		select {
		case <-timer.C:
			_, evidence := l.s.live.snapshot()
			at := l.deadline(evidence)
			if wait := time.Until(at); wait > 0 {
				timer.Reset(wait)
				continue
			}
			l.lose(l.suspendedTooLong(evidence))
			return
		case <-heartbeat.C:
			age, begins, ends := l.s.live.silence(time.Now())
			if now := age > begins || silent && age > ends; now != silent {
				silent = now
				l.s.obs.Silent(silent)
			}
			if state, _, _ := l.s.current(); state == zk.StateHasSession {
				go l.beat()
			}
		case <-l.release:
			return
		}
	}
}

// overdue is the loss watchDeadline reports once the deadline, given the
// evidence as of now, has passed; nil before.
func (l *Lease) overdue(now time.Time) error {
	_, evidence := l.s.live.snapshot()
	if now.Before(l.deadline(evidence)) {
		return nil
	}
	return l.suspendedTooLong(evidence)
}

func (l *Lease) suspendedTooLong(evidence time.Time) error {
	return fmt.Errorf("%w: the leader is known to have renewed the session only until %s ago; session timeout %s, stop grace %s",
		ErrSuspendedTooLong, time.Since(evidence).Round(time.Millisecond), l.s.Granted(), l.s.opts.StopGrace)
}

// heartbeats is how many times a session timeout a holder writes its node.
const heartbeats = 20

// beat writes the node's data again: a write the leader must commit, which
// is what lets the wire layer count evidence (wire.go, W in E1 and E2).
// Its answer also shows the node's owner. It returns the node's stat
// after the write, nil if the write failed.
func (l *Lease) beat() *zk.Stat {
	stat, err := l.s.conn.Set(l.s.abs(l.node), *l.data.Load(), -1)
	switch {
	case errors.Is(err, zk.ErrNoNode):
		l.lose(l.check(false, nil))
	case err == nil:
		if err := l.check(true, stat); err != nil {
			l.lose(err)
			return nil
		}
		return stat
	}
	return nil
}

// firstBeat is the beat that goes out as the lease is handed out. With a
// stamp, its write's mtime, the leader's clock as it committed the write,
// is when this holder held (a round trip after it got the lock, never
// before), and the beats after it write the data that says so: a mutex
// node's own times cannot, its ctime being when it queued and its mtime
// the last beat's. No write of its own: the stamp costs the handoff
// nothing, and reaches the node within one heartbeat. A first beat that
// fails leaves the node unstamped for good rather than stamped late.
func (l *Lease) firstBeat() {
	stat := l.beat()
	if stat == nil || l.stamp == nil {
		return
	}
	data := l.stamp(*l.data.Load(), time.UnixMilli(stat.Mtime))
	l.data.Store(&data)
}

// KillBy is the latest moment by which everything run under the lease must
// be dead: the earliest moment the leader may expire the session, given
// the evidence that it renewed it (wire.go), less a tenth of the timeout
// for the difference between its clock and ours. A holder that learns of a
// loss late (it was frozen) must not wait out a whole stop grace past it.
// It moves on as the evidence does.
func (l *Lease) KillBy() time.Time { return l.s.SureUntil() }

// MaxStopGrace is the longest stop grace a session timeout leaves a holder
// any time to run with: the evidence that the leader renewed the session
// lags by up to m (a quarter of the timeout), a holder's heartbeat (a
// twentieth) and two syncs' periods (a fortieth each: the one R0 was
// answered in and the one before the beat, session.go, wire.go E2), and
// a tenth of the timeout is kept back. With anything longer, evidence
// that lags its most, with every answer prompt, would stop the workload.
func MaxStopGrace(timeout time.Duration) time.Duration {
	return timeout - timeout/10 - timeout/4 - timeout/10
}

func (l *Lease) budget(granted time.Duration) time.Duration {
	return granted - l.s.opts.StopGrace - granted/10
}

// deadline is when the holder must be told to stop, given the evidence.
func (l *Lease) deadline(evidence time.Time) time.Time {
	return evidence.Add(l.budget(l.s.Granted()))
}

// check is whether the node, as just seen, is still this lease's.
func (l *Lease) check(exists bool, stat *zk.Stat) error {
	switch {
	case !exists:
		return l.cause(fmt.Errorf("%w: %s", ErrNodeDeleted, l.node))
	case stat.EphemeralOwner != l.session:
		return l.cause(fmt.Errorf("%w: %s now belongs to session %#x", ErrNodeDeleted, l.node, stat.EphemeralOwner))
	}
	return nil
}

// cause names an expired session rather than its consequence, the node's
// deletion, when both are true.
func (l *Lease) cause(err error) error {
	if _, expiries, _ := l.s.current(); expiries > l.expiries || l.s.ID() != l.session {
		return fmt.Errorf("%w: session %#x", ErrSessionExpired, l.session)
	}
	return err
}

// Loss names why a lease was lost, in logs, metrics and probes alike
// (docs/design.md §5, §9).
type Loss int

const (
	UnknownLoss     Loss = iota // not one of lockex's: a bug
	SessionExpired              // ErrSessionExpired
	NodeDeleted                 // ErrNodeDeleted
	SuspendDeadline             // ErrSuspendedTooLong
)

// Losses are the losses lockex knows, each a value of the
// lockex_lock_lost_total metric's reason label.
var Losses = []Loss{SessionExpired, NodeDeleted, SuspendDeadline}

var lossNames = [...]string{"unknown", "session_expired", "node_deleted", "suspend_deadline"}

func (l Loss) String() string {
	if l < 0 || int(l) >= len(lossNames) {
		return lossNames[UnknownLoss]
	}
	return lossNames[l]
}

// LossOf names the loss that err, a Lease's Err, reports.
func LossOf(err error) Loss {
	switch {
	case errors.Is(err, ErrSessionExpired):
		return SessionExpired
	case errors.Is(err, ErrNodeDeleted):
		return NodeDeleted
	case errors.Is(err, ErrSuspendedTooLong):
		return SuspendDeadline
	}
	return UnknownLoss
}
