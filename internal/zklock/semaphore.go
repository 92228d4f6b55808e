package zklock

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/go-zookeeper/zk"
)

// Semaphore is kazoo's Semaphore recipe at path P: P holds the size N as
// decimal text, a Mutex at the sibling P-__lock__ serialises lease taking,
// and each holder owns an ephemeral child P/<uuid>.
type Semaphore struct {
	s     *Session
	path  string
	data  []byte
	size  int
	lease string // own lease's name
	mutex *Mutex
}

// NewSemaphore returns a semaphore of size leases at path.
func NewSemaphore(s *Session, path, identifier string, size int) *Semaphore {
	mutex := NewMutex(s, path+"-__lock__", identifier)
	mutex.obs = nopObserver{}
	mutex.sizeCheck = false
	mutex.stamp = nil
	// Who waits for the turn ahead of this contender holds no lease for
	// that: the leases' holders are not known this way.
	mutex.behind = nil
	return &Semaphore{s: s, path: path, data: []byte(identifier), size: size, lease: newPrefix(), mutex: mutex}
}

// errTurnLost means the serialising mutex was lost while this contender
// held it (its node was deleted, or its session expired): another
// contender may hold it now.
var errTurnLost = errors.New("zklock: semaphore's mutex lost")

// Acquire returns a Lease once this contender holds one of the leases. If
// blocking is false it returns ErrBusy when all leases are taken; if ctx
// ends first, ctx's error. It returns an error wrapping ErrSizeMismatch when
// P records another size. Nothing of it is left in ZooKeeper on error.
func (m *Semaphore) Acquire(ctx context.Context, blocking bool) (*Lease, error) {
	if err := m.checkSize(); err != nil {
		return nil, err
	}
	// The turn first: a lease the dead incarnation asked for just before it
	// died is created only while its turn node exists (create), so once
	// that is gone, the leases listed next include every lease it can have.
	m.s.takeOver(m.mutex.path, contender.MatchString)
	// Every child of P counts as a lease, as kazoo counts them.
	m.s.takeOver(m.path, func(string) bool { return true })
	return m.acquire(ctx, blocking)
}

func (m *Semaphore) acquire(ctx context.Context, blocking bool) (*Lease, error) {
	start := time.Now()
	giveUp := never
	if !blocking {
		// Waiting for the serialising mutex is only worth it while a lease
		// is free; a kazoo waiter holds that mutex until one is.
		giveUp = m.full
	}
	for {
		turn, err := m.mutex.acquire(ctx, giveUp)
		if err != nil {
			return nil, err
		}
		lease, err := m.underTurn(ctx, turn, blocking, start)
		m.endTurn(turn)
		switch {
		case errors.Is(err, errTurnLost):
			m.s.log.Info("lost the semaphore's mutex while waiting for a lease; queueing again", "err", err)
			continue
		case err != nil:
			return nil, err
		}
		// After the turn: the next contender need not wait for this.
		if err := m.confirm(ctx); err != nil {
			if rerr := lease.Release(); rerr != nil {
				m.s.log.Warn("could not delete own lease; closing the session will", "node", lease.Node(), "err", rerr)
			}
			return nil, err
		}
		return lease, nil
	}
}

// endTurn releases the serialising mutex, and deletes any other node of
// this contender's in it: a create whose answer was lost may have left one
// behind the turn's, which would hold up every other contender for as long
// as this one holds its lease.
func (m *Semaphore) endTurn(turn *Lease) {
	if err := turn.Release(); err != nil {
		m.s.log.Warn("could not release the semaphore's mutex", "err", err)
	}
	m.mutex.abandon("")
}

// underTurn finds or takes a lease while this contender holds the
// serialising mutex, waiting for one to be free if blocking. It returns an
// error wrapping errTurnLost when the turn ends first. On error it deletes
// the own lease, which a create whose answer was lost may have made.
func (m *Semaphore) underTurn(ctx context.Context, turn *Lease, blocking bool, start time.Time) (_ *Lease, err error) {
	defer func() {
		if err != nil {
			m.abandon()
		}
	}()
	r := retrier{s: m.s}
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		r.round()
		lease, err := m.takeThenWait(ctx, turn, blocking, start)
		if err != nil {
			if errors.Is(err, ErrBusy) || errors.Is(err, errTurnLost) {
				return nil, err
			}
			if err = r.again(ctx, "semaphore "+m.path, err); err != nil {
				return nil, err
			}
			continue
		}
		r.ok()
		if lease != nil {
			return lease, nil
		}
	}
}

// takeThenWait makes one pass under the turn and, without a lease, waits
// for the leases or the turn to change, or for ctx (which the caller then
// sees). As in Mutex.roundThenWait, the turn's watch is set again after
// its beats only until this wait is over.
func (m *Semaphore) takeThenWait(ctx context.Context, turn *Lease, blocking bool, start time.Time) (*Lease, error) {
	ended := make(chan struct{})
	defer close(ended)
	lease, wait, err := m.take(turn, blocking, start, ended)
	if err != nil || lease != nil {
		return lease, err
	}
	select {
	case <-wait:
	case <-ctx.Done():
	}
	return nil, nil
}

// take makes one pass under the mutex: it finds or creates the own lease
// while fewer than size exist, or returns a watch on the leases.
func (m *Semaphore) take(turn *Lease, blocking bool, start time.Time, stop <-chan struct{}) (*Lease, <-chan zk.Event, error) {
	leases, _, watch, err := m.s.conn.ChildrenW(m.s.abs(m.path))
	if err != nil {
		return nil, nil, err
	}
	p := join(m.path, m.lease)
	if !slices.Contains(leases, m.lease) {
		if len(leases) >= m.size {
			if !blocking {
				return nil, nil, fmt.Errorf("%w: all %d leases of %s are held", ErrBusy, m.size, m.path)
			}
			m.s.obs.Contenders(len(leases))
			m.s.obs.Waiting(0)
			lost, err := m.watchTurn(turn, stop)
			if err != nil {
				return nil, nil, err
			}
			return nil, merge(watch, lost), nil
		}
		if err := m.create(turn, p); err != nil {
			return nil, nil, err
		}
	}
	stat, mine, err := m.s.owned(p)
	if err != nil {
		return nil, nil, err
	}
	if !mine {
		// A lease of an expired session of ours: wait until it is gone.
		return nil, watch, nil
	}
	held := len(leases)
	if !slices.Contains(leases, m.lease) {
		held++
	}
	m.s.obs.Contenders(held)
	// No stamp: a lease is created as it is taken, so its ctime says when.
	return newLease(m.s, m.path, p, m.data, stat, time.Since(start), nil), nil, nil
}

// watchTurn returns a channel that fires when the turn's node goes, by a
// deletion or with its session, or errTurnLost if it has gone already. A
// turn is not lost while the session is merely suspended: the check in
// create keeps a stale turn from taking a lease all the same.
func (m *Semaphore) watchTurn(turn *Lease, stop <-chan struct{}) (<-chan zk.Event, error) {
	ok, stat, gone, err := m.s.existsUntilGone(m.s.abs(turn.Node()), nil, stop)
	switch {
	case err != nil:
		return nil, err
	case !ok || stat.EphemeralOwner != turn.session:
		return nil, fmt.Errorf("%w: %s is gone", errTurnLost, turn.Node())
	}
	return gone, nil
}

// create creates the lease at p only if the turn is still this contender's
// when ZooKeeper applies the create: a check of the turn's node and the
// create are one transaction. The node's name is this contender's alone
// and it is ephemeral, so it exists exactly while the session that won the
// turn lives and nobody deleted it; the leader decides the check in the
// same order in which it applies the deletions of an expired session's
// nodes (PrepRequestProcessor: closeSession and check both go through
// getRecordForPath, and requests of a closing session are refused). A
// check followed by a separate create would leave a window in between.
func (m *Semaphore) create(turn *Lease, p string) error {
	res, err := m.s.conn.Multi(
		&zk.CheckVersionRequest{Path: m.s.abs(turn.Node()), Version: -1},
		&zk.CreateRequest{Path: m.s.abs(p), Data: m.data, Acl: m.s.acl, Flags: zk.FlagEphemeral},
	)
	switch {
	case err == nil:
		return nil
	case len(res) != 2:
		return err // no answer per operation: the connection, most likely
	case errors.Is(res[0].Error, zk.ErrNoNode):
		return fmt.Errorf("%w: %s is gone", errTurnLost, turn.Node())
	case errors.Is(res[1].Error, zk.ErrNodeExists):
		return nil // an earlier create whose answer was lost; take looks whose it is
	}
	return err
}

// confirm refuses P if a lock's contender is among its children, once the
// own lease exists; the size was written before it. A lock that created
// its node later reads P's data later and sees the size (Mutex.round), so
// one of the two refuses: ZooKeeper applies writes in one order, and a
// session reads what it wrote.
func (m *Semaphore) confirm(ctx context.Context) error {
	r := retrier{s: m.s}
	for {
		r.round()
		err := m.checkNoLocks()
		if err == nil || !retryable(err) {
			return err
		}
		if err = r.again(ctx, "semaphore "+m.path, err); err != nil {
			return err
		}
	}
}

// checkNoLocks refuses P if a lock's contender is among its children.
func (m *Semaphore) checkNoLocks() error {
	children, err := m.s.children(m.path)
	if err != nil {
		return err
	}
	if slices.ContainsFunc(children, contender.MatchString) {
		return fmt.Errorf("%w: %s is a lock (size 1) in ZooKeeper, asked for a semaphore of %d", ErrSizeMismatch, m.path, m.size)
	}
	return nil
}

// full reports whether every lease is held, and watches the leases.
func (m *Semaphore) full() (bool, <-chan zk.Event, error) {
	leases, _, watch, err := m.s.conn.ChildrenW(m.s.abs(m.path))
	return len(leases) >= m.size, watch, err
}

// abandon deletes the own lease, if there is one.
func (m *Semaphore) abandon() {
	if err := m.s.deleteNode(join(m.path, m.lease)); err != nil {
		m.s.log.Warn("could not delete own lease; closing the session will", "node", join(m.path, m.lease), "err", err)
	}
}

// checkSize stores the size on P, or compares it with the one stored there.
// P is created, with the size, only when a read says it is missing: a
// create of a P that exists is a write the leader logs and fails.
func (m *Semaphore) checkSize() error {
	want := strconv.Itoa(m.size)
	for {
		data, stat, err := m.s.conn.Get(m.s.abs(m.path))
		if errors.Is(err, zk.ErrNoNode) {
			existed, err := m.s.ensurePath(m.path, []byte(want))
			if err != nil || !existed {
				return err
			}
			continue // created by another meanwhile: read what it wrote
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", m.path, err)
		}
		if len(data) > 0 {
			if n, err := strconv.Atoi(string(data)); err != nil || n != m.size {
				return fmt.Errorf("%w: %s holds size %q in ZooKeeper, asked for %d", ErrSizeMismatch, m.path, data, m.size)
			}
			return nil
		}
		// Empty: a plain lock's node, or a kazoo Semaphore between creating
		// P and writing its size. Refuse the first, without writing a size
		// that would shut its contenders out; write the size only if nobody
		// has written since we read. Only the check after the own lease
		// exists decides (confirm).
		if err := m.checkNoLocks(); err != nil {
			return err
		}
		if _, err := m.s.conn.Set(m.s.abs(m.path), []byte(want), stat.Version); err == nil || !errors.Is(err, zk.ErrBadVersion) {
			return err
		}
	}
}
