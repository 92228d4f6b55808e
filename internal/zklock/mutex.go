package zklock

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-zookeeper/zk"
)

// contender matches the children of a lock node that take part in it:
// kazoo's Lock writes <uuid>__lock__<seq>, its ReadLock <uuid>__rlock__<seq>.
var contender = regexp.MustCompile(`(?:__lock__|__rlock__)(-?\d{10})$`)

// Mutex is kazoo's Lock recipe at path P: every contender creates an
// ephemeral sequential child <uuid>__lock__<seq>; the lowest sequence holds
// the lock; each waiter watches only its predecessor.
type Mutex struct {
	s    *Session
	path string
	data []byte
	// prefix names this contender's node, so that after a create whose
	// answer was lost it finds the node instead of making a second one.
	prefix string
	// sizeCheck refuses a P that holds a semaphore's size: mutex
	// contenders would not see the semaphore's leases.
	sizeCheck bool
	// obs is told of contenders and waiting; a semaphore's inner mutex
	// reports nothing, the semaphore reports its leases.
	obs SessionObserver
	// stamp is Options.HeldSince for a lock's holder; nil for a
	// semaphore's turn, whose holder holds no lease, so since when it
	// holds the turn is nobody's business.
	stamp func([]byte, time.Time) []byte
	// created is set once a create of a node with prefix was sent: from
	// then on a node of ours may exist that no answer named.
	created bool
	// behind, if not nil, is told the data of each node this contender
	// waits directly behind (Options.Behind).
	behind func(data []byte)
}

// NewMutex returns a mutex at path whose node carries identifier.
func NewMutex(s *Session, path, identifier string) *Mutex {
	return &Mutex{s: s, path: path, data: []byte(identifier), prefix: newPrefix() + "__lock__", sizeCheck: true, obs: s.obs,
		stamp: s.opts.HeldSince, behind: s.opts.Behind}
}

// giveUpFunc decides, while a contender waits, whether to stop waiting
// (non-blocking mode); wake, if not nil, fires when it should be asked again.
type giveUpFunc func() (giveUp bool, wake <-chan zk.Event, err error)

func never() (bool, <-chan zk.Event, error)  { return false, nil, nil }
func always() (bool, <-chan zk.Event, error) { return true, nil, nil }

// Acquire returns a Lease once this contender holds the lock. If blocking is
// false it returns ErrBusy when the lock is taken; if ctx ends first it
// returns ctx's error. Either way its node is deleted before it returns.
func (m *Mutex) Acquire(ctx context.Context, blocking bool) (*Lease, error) {
	if m.sizeCheck {
		// Only the check after the own node exists decides (round);
		// this one spares a semaphore in use the sight of our node.
		if err := m.checkNotSemaphore(); err != nil {
			return nil, err
		}
	}
	m.s.takeOver(m.path, contender.MatchString)
	giveUp := never
	if !blocking {
		giveUp = always
	}
	return m.acquire(ctx, giveUp)
}

func (m *Mutex) checkNotSemaphore() error {
	data, _, err := m.s.conn.Get(m.s.abs(m.path))
	if err != nil {
		if errors.Is(err, zk.ErrNoNode) {
			return nil
		}
		return fmt.Errorf("read %s: %w", m.path, err)
	}
	if n, err := strconv.Atoi(string(data)); err == nil {
		return fmt.Errorf("%w: %s is a semaphore of size %d in ZooKeeper, asked for a lock (size 1)", ErrSizeMismatch, m.path, n)
	}
	return nil
}

func (m *Mutex) acquire(ctx context.Context, giveUp giveUpFunc) (lease *Lease, err error) {
	start := time.Now()
	r := retrier{s: m.s}
	var node string // own node's name; "" while there is none
	defer func() {
		if err != nil {
			m.abandon(node)
		}
	}()
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		r.round()
		lease, err = m.roundThenWait(ctx, &node, giveUp, start)
		if err != nil {
			if errors.Is(err, ErrBusy) || errors.Is(err, ErrSizeMismatch) {
				return nil, err
			}
			if err = r.again(ctx, "lock "+m.path, err); err != nil {
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

// roundThenWait makes one round and, when it ends waiting, waits for what
// it watches or for ctx (which the caller then sees). The round's watches
// are set again after a beat only until the wait is over, whichever
// channel ended it: a goroutine per round kept on would pile up.
func (m *Mutex) roundThenWait(ctx context.Context, node *string, giveUp giveUpFunc, start time.Time) (*Lease, error) {
	ended := make(chan struct{})
	defer close(ended)
	lease, wait, err := m.round(node, giveUp, start, ended)
	if err != nil || lease != nil || wait == nil {
		return lease, err
	}
	select {
	case <-wait:
	case <-ctx.Done():
	}
	return nil, nil
}

// round makes one pass of the recipe. It returns a lease when the lock is
// held, a channel to wait on when it is not, or neither to go again at once.
func (m *Mutex) round(node *string, giveUp giveUpFunc, start time.Time, done <-chan struct{}) (*Lease, <-chan zk.Event, error) {
	// Once the own node is known, whether it is still this session's is
	// asked together with the listing: the two answers come in one round
	// trip, both after whatever woke this round. Should a reconnect fall
	// between them, the second server has seen every zxid the first showed
	// (ZooKeeper refuses a client whose lastZxidSeen is ahead of it), and
	// a node's name is never reused: a node that one answer lists and the
	// other finds ours is ours in the later of the two states as well.
	// (A new session after an expiry starts from zxid 0, but then no node
	// of the old one counts as ours: mine compares with the current id.)
	var own <-chan ownStat
	if *node != "" {
		own = m.lookAt(*node)
	}
	children, parent, err := m.s.conn.Children(m.s.abs(m.path))
	if errors.Is(err, zk.ErrNoNode) {
		// P is created only when the listing says it is missing: an
		// unconditional create of a node that exists is a write the
		// leader logs and fails, on every contender's path.
		if _, err := m.s.ensurePath(m.path, nil); err != nil {
			return nil, nil, err
		}
		children, parent, err = m.s.conn.Children(m.s.abs(m.path))
	}
	if err != nil {
		return nil, nil, err
	}
	known := map[string]ownStat{}
	if own != nil {
		o := <-own
		if o.err != nil {
			return nil, nil, o.err
		}
		known[*node] = o
	}
	mine, err := m.mine(children, known)
	if err != nil {
		return nil, nil, err
	}
	if len(mine) == 0 {
		// List again before looking for a predecessor: contenders that
		// created their nodes after this listing may be ahead of ours.
		*node, err = m.adoptOrCreate()
		return nil, nil, err
	}
	// Two nodes of ours (a lost create retried): keep the older, or the
	// newer would wait behind it for ever, and so would everyone after.
	*node = mine[0].name
	for _, extra := range mine[1:] {
		if err := m.s.conn.Delete(m.s.abs(join(m.path, extra.name)), -1); err != nil && !errors.Is(err, zk.ErrNoNode) {
			return nil, nil, err
		}
	}
	if m.sizeCheck && parent.DataLength > 0 {
		// P was read after the own node was created: a semaphore that
		// wrote its size later lists its children later and sees our node
		// (Semaphore.confirm), so one of the two refuses.
		if err := m.checkNotSemaphore(); err != nil {
			return nil, nil, err
		}
	}

	pred, ahead := predecessor(children, *node)
	m.obs.Contenders(countContenders(children))
	if pred == "" {
		return m.held(mine[0], start)
	}
	m.obs.Waiting(ahead)
	m.s.log.Debug("waiting behind", "predecessor", join(m.path, pred), "node", join(m.path, *node))
	stop, wake, err := giveUp()
	if err != nil {
		return nil, nil, err
	}
	if stop {
		return nil, nil, fmt.Errorf("%w: %s has %d contenders ahead", ErrBusy, m.path, ahead)
	}
	// The watch is set with a read of the predecessor's data, which also
	// tells whom it waits behind (Options.Behind): the same one round
	// trip. A read, not an exists: ZooKeeper sets an exists watch on a
	// node this session may not read but never delivers its deletion, so
	// a waiter behind such a node would wait for ever; the read is refused
	// at once (ErrNotAuthorized).
	data := new([]byte)
	ok, _, watch, err := m.s.existsUntilGone(m.s.abs(join(m.path, pred)), data, done)
	if err != nil || !ok {
		return nil, nil, err // gone already: look again at once
	}
	if m.behind != nil {
		m.behind(*data)
	}
	return nil, merge(watch, wake), nil
}

// ownStat is what an exists on one of this contender's nodes answered.
type ownStat struct {
	name   string
	exists bool
	stat   *zk.Stat
	err    error
}

// lookAt sends an exists for the own node name and returns where its
// answer will arrive, so that the caller can list the children meanwhile.
func (m *Mutex) lookAt(name string) <-chan ownStat {
	out := make(chan ownStat, 1)
	go func() {
		ok, stat, err := m.s.conn.Exists(m.s.abs(join(m.path, name)))
		out <- ownStat{name: name, exists: ok, stat: stat, err: err}
	}()
	return out
}

// adoptOrCreate finds this contender's node (a create whose answer was lost
// may have succeeded) or else creates it. A retried create may reach a
// server that has not yet applied the first one: Sync makes it catch up
// with the leader before it is asked. Before the first create there is
// nothing to find: the caller's listing just showed no node of ours, and
// the prefix is this Mutex's alone.
func (m *Mutex) adoptOrCreate() (string, error) {
	if m.created {
		if _, err := m.s.conn.Sync(m.s.abs(m.path)); err != nil {
			return "", err
		}
		children, err := m.s.children(m.path)
		if err != nil {
			return "", err
		}
		mine, err := m.mine(children, nil)
		if err != nil {
			return "", err
		}
		if len(mine) > 0 {
			return mine[0].name, nil
		}
	}
	m.created = true
	created, err := m.s.conn.Create(m.s.abs(join(m.path, m.prefix)), m.data, zk.FlagEphemeral|zk.FlagSequence, m.s.acl)
	if err != nil {
		return "", err
	}
	name := m.s.rel(created)
	return name[strings.LastIndexByte(name, '/')+1:], nil
}

// mine returns the children that are this contender's nodes, oldest
// first, with their stats: those with its prefix that this session owns.
// A node of an earlier session of ours is not among them. known holds
// answers to exists already asked in this round, after the listing's
// cause; every other candidate is asked now.
func (m *Mutex) mine(children []string, known map[string]ownStat) ([]ownStat, error) {
	var mine []ownStat
	for _, name := range hasPrefixIn(children, m.prefix) {
		o, ok := known[name]
		if !ok {
			exists, stat, err := m.s.conn.Exists(m.s.abs(join(m.path, name)))
			if err != nil {
				return nil, err
			}
			o = ownStat{name: name, exists: exists, stat: stat}
		}
		if o.exists && o.stat.EphemeralOwner == m.s.ID() {
			mine = append(mine, o)
		}
	}
	slices.SortFunc(mine, func(a, b ownStat) int { return strings.Compare(sequence(a.name), sequence(b.name)) })
	return mine, nil
}

// abandon deletes what a failed acquire leaves: node, and every other node
// with this contender's prefix that the session owns, for a create whose
// answer was lost may have made one that node does not name. It waits for
// a connection no longer than the connect timeout; closing the session,
// which lockex does next, removes whatever is left.
func (m *Mutex) abandon(node string) {
	ctx, cancel := context.WithTimeout(context.Background(), m.s.opts.ConnectTimeout)
	defer cancel()
	if err := m.s.WaitConnected(ctx); err != nil {
		m.s.log.Warn("could not delete own lock nodes; closing the session will", "path", m.path, "err", err)
		return
	}
	nodes := []string{node}
	if children, err := m.s.children(m.path); err == nil {
		if mine, err := m.mine(children, nil); err == nil {
			for _, o := range mine {
				nodes = append(nodes, o.name)
			}
		}
	}
	slices.Sort(nodes)
	for _, n := range slices.Compact(nodes) {
		if n == "" {
			continue
		}
		if err := m.s.deleteNode(join(m.path, n)); err != nil {
			m.s.log.Warn("could not delete own lock node; closing the session will", "node", join(m.path, n), "err", err)
		}
	}
}

// held hands out the lease on own, which this round found to be this
// session's (mine): the exists that showed it was answered after the
// listing's cause, as a second one would be, and a node's owner and czxid
// (the fencing token) never change.
func (m *Mutex) held(own ownStat, start time.Time) (*Lease, <-chan zk.Event, error) {
	return newLease(m.s, m.path, join(m.path, own.name), m.data, own.stat, time.Since(start), m.stamp), nil, nil
}

// predecessor returns the contender just ahead of own and how many are
// ahead. Sequences are compared as strings, exactly as kazoo compares them:
// two clients that ordered a wrapped (negative) sequence differently could
// both believe they hold the lock.
func predecessor(children []string, own string) (pred string, ahead int) {
	ownSeq := sequence(own)
	if ownSeq == "" {
		return "", 0
	}
	for _, c := range children {
		if seq := sequence(c); seq != "" && seq < ownSeq {
			ahead++
			if pred == "" || seq > sequence(pred) {
				pred = c
			}
		}
	}
	return pred, ahead
}

// sequence is a contender's sequence number as its name spells it; "" for
// a child that is no contender.
func sequence(name string) string {
	if m := contender.FindStringSubmatch(name); m != nil {
		return m[1]
	}
	return ""
}

func countContenders(children []string) int {
	n := 0
	for _, c := range children {
		if contender.MatchString(c) {
			n++
		}
	}
	return n
}

// merge returns a channel that fires when a or b fires; b may be nil.
func merge(a, b <-chan zk.Event) <-chan zk.Event {
	if b == nil {
		return a
	}
	out := make(chan zk.Event, 1)
	go func() {
		select {
		case ev := <-a:
			out <- ev
		case ev := <-b:
			out <- ev
		}
	}()
	return out
}
