package zklock

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"
	"github.com/lockex/lockex/internal/zktest"
)

// patience bounds every wait for something that must happen; settle is how
// long a test gives something that must not happen to show itself. Both
// are generous: the machine is shared with JVMs.
const (
	patience = 30 * time.Second
	settle   = 3 * time.Second
)

// connectWith is connect with options changed by tune.
func connectWith(t *testing.T, hosts string, tune func(*Options)) *Session {
	t.Helper()
	opts := Options{
		Servers: strings.Split(hosts, ","), SessionTimeout: 4 * time.Second,
		ConnectTimeout: 5 * time.Second, Attempts: 1, Retries: 1,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	if tune != nil {
		tune(&opts)
	}
	s, err := Connect(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// waitUntil polls cond until it holds, failing the test after patience.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(patience); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %s", what, patience)
		}
	}
}

// acquired is what one contender's Acquire returned.
type acquired struct {
	who   string
	lease *Lease
	err   error
}

// contend runs Acquire in the background; its result arrives on out.
func contend(ctx context.Context, who string, acquire func(context.Context) (*Lease, error), out chan<- acquired) {
	go func() {
		l, err := acquire(ctx)
		out <- acquired{who, l, err}
	}()
}

// semaphoreQueue is how many nodes the semaphore's serialising mutex has,
// and whether the first of them belongs to s, as look sees it (s's own
// connection may be stalled).
func semaphoreQueue(t *testing.T, look *Session, p string, s *Session) (n int, first bool) {
	t.Helper()
	kids, err := look.children(p + "-__lock__")
	if err != nil {
		t.Fatal(err)
	}
	if len(kids) > 0 {
		ok, stat, err := look.conn.Exists(look.abs(join(p+"-__lock__", lowest(kids))))
		first = err == nil && ok && stat.EphemeralOwner == s.ID()
	}
	return len(kids), first
}

// lowest is the contender among kids that holds the lock.
func lowest(kids []string) string {
	for _, k := range kids {
		if pred, _ := predecessor(kids, k); pred == "" {
			return k
		}
	}
	return ""
}

// fullSemaphoreWithTwoWaiters sets up issue 12's scenario on a semaphore of
// size 2: h1 and h2 hold the leases, a holds the serialising mutex and
// waits for a free lease, b waits behind a for the mutex. It returns h1's
// leases and the channel a's and b's results arrive on.
func fullSemaphoreWithTwoWaiters(t *testing.T, ctx context.Context, p string, h1, h2, a, b *Session) ([2]*Lease, chan acquired) {
	t.Helper()
	var held [2]*Lease
	for i, h := range []*Session{h1, h2} {
		var err error
		if held[i], err = NewSemaphore(h, p, "h", 2).Acquire(ctx, true); err != nil {
			t.Fatal(err)
		}
	}
	got := make(chan acquired, 2)
	contend(ctx, "a", func(ctx context.Context) (*Lease, error) { return NewSemaphore(a, p, "a", 2).Acquire(ctx, true) }, got)
	waitUntil(t, "a holding the semaphore's mutex", func() bool { _, first := semaphoreQueue(t, h1, p, a); return first })
	contend(ctx, "b", func(ctx context.Context) (*Lease, error) { return NewSemaphore(b, p, "b", 2).Acquire(ctx, true) }, got)
	waitUntil(t, "b queued behind a", func() bool { n, _ := semaphoreQueue(t, h1, p, a); return n == 2 })
	return held, got
}

// expectOneAtATime frees one lease of a full semaphore of size 2 and
// checks that exactly one of the two waiters takes it: one within
// patience, the other not within settle. Then it frees the other lease,
// which the other waiter must take.
func expectOneAtATime(t *testing.T, held [2]*Lease, got <-chan acquired) {
	t.Helper()
	if err := held[0].Release(); err != nil {
		t.Fatal(err)
	}
	first := <-got
	if first.err != nil {
		t.Fatalf("%s: %v", first.who, first.err)
	}
	select {
	case second := <-got:
		t.Fatalf("%s and %s both took a lease while a third holder held one (second: %v)", first.who, second.who, second.err)
	case <-time.After(settle):
	}
	if err := held[1].Release(); err != nil {
		t.Fatal(err)
	}
	if second := <-got; second.err != nil {
		t.Fatalf("%s, once a lease was free: %v", second.who, second.err)
	}
}

// TestSemaphoreWaiterWhoseMutexExpired is issue 12: a waiter holding the
// semaphore's serialising mutex has its session expire behind a stalled
// connection, so the next waiter takes the mutex. go-zookeeper makes a new
// session by itself; the first waiter must take the mutex again rather
// than create a lease on the strength of a turn it no longer has.
func TestSemaphoreWaiterWhoseMutexExpired(t *testing.T) {
	zkc := zktest.Start(t)
	px := zktest.StartProxy(t, zkc.Servers[0].Addr())
	h1, h2, b := connect(t, zkc.Hosts()), connect(t, zkc.Hosts()), connect(t, zkc.Hosts())
	// a rides out the stall: enough time and retries to come back.
	a := connectWith(t, px.Addr(), func(o *Options) { o.ConnectTimeout, o.Retries = 10*time.Second, 10 })
	ctx, cancel := context.WithTimeout(context.Background(), 2*patience)
	defer cancel()
	held, got := fullSemaphoreWithTwoWaiters(t, ctx, "/sem-expired", h1, h2, a, b)

	old := a.ID()
	px.Stall()
	waitUntil(t, "a's mutex node to go with its session", func() bool { n, _ := semaphoreQueue(t, h1, "/sem-expired", a); return n == 1 })
	px.Pass()
	waitUntil(t, "a new session for a", func() bool {
		state, _, _ := a.current()
		return a.ID() != old && state == zk.StateHasSession
	})
	expectOneAtATime(t, held, got)
}

// TestSemaphoreWaiterWhoseMutexNodeWasDeleted: an operator deletes the
// mutex node of the waiter that holds the semaphore's serialising mutex.
// That waiter's turn is over; it must queue again.
func TestSemaphoreWaiterWhoseMutexNodeWasDeleted(t *testing.T) {
	zkc := zktest.Start(t)
	h1, h2, a, b := connect(t, zkc.Hosts()), connect(t, zkc.Hosts()), connect(t, zkc.Hosts()), connect(t, zkc.Hosts())
	ctx, cancel := context.WithTimeout(context.Background(), 2*patience)
	defer cancel()
	held, got := fullSemaphoreWithTwoWaiters(t, ctx, "/sem-deleted", h1, h2, a, b)

	kids, err := h1.children("/sem-deleted-__lock__")
	if err != nil {
		t.Fatal(err)
	}
	// a's node is the lowest, as fullSemaphoreWithTwoWaiters made sure.
	if err := h1.conn.Delete(h1.abs(join("/sem-deleted-__lock__", lowest(kids))), -1); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "b holding the mutex", func() bool { _, first := semaphoreQueue(t, h1, "/sem-deleted", b); return first })
	expectOneAtATime(t, held, got)
}

// TestSemaphoreLeaseNeedsTheTurn: a lease is created only if the turn's
// node still exists when ZooKeeper applies the create, however late the
// contender learns of its loss.
func TestSemaphoreLeaseNeedsTheTurn(t *testing.T) {
	zkc := zktest.Start(t)
	s, op := connect(t, zkc.Hosts()), connect(t, zkc.Hosts())
	m := NewSemaphore(s, "/sem-turn", "me", 2)
	if err := m.checkSize(); err != nil {
		t.Fatal(err)
	}
	turn, err := m.mutex.acquire(context.Background(), never)
	if err != nil {
		t.Fatal(err)
	}
	if err := op.conn.Delete(op.abs(turn.Node()), -1); err != nil {
		t.Fatal(err)
	}
	if _, _, err := m.take(turn, true, time.Now()); !errors.Is(err, errTurnLost) {
		t.Fatalf("take after the turn's node was deleted: %v, want errTurnLost", err)
	}
	if kids, _ := s.children("/sem-turn"); len(kids) != 0 {
		t.Errorf("leases %v, want none", kids)
	}
}

// ownNode creates a node with m's prefix on s, as a create of m's whose
// answer was lost would have.
func ownNode(t *testing.T, s *Session, m *Mutex) string {
	t.Helper()
	if _, err := s.ensurePath(m.path, nil); err != nil {
		t.Fatal(err)
	}
	p, err := s.conn.Create(s.abs(join(m.path, m.prefix)), m.data, zk.FlagEphemeral|zk.FlagSequence, s.acl)
	if err != nil {
		t.Fatal(err)
	}
	return s.rel(p)
}

// TestTwoOwnNodes: a create whose answer was lost, retried through a
// follower that had not applied it, leaves two nodes of the same
// contender. It must take the lock on the older and delete the newer,
// not wait behind its own node.
func TestTwoOwnNodes(t *testing.T) {
	zkc := zktest.Start(t)
	s := connect(t, zkc.Hosts())
	m := NewMutex(s, "/twice", "me")
	older, newer := ownNode(t, s, m), ownNode(t, s, m)
	ctx, cancel := context.WithTimeout(context.Background(), settle)
	defer cancel()
	lease, err := m.Acquire(ctx, true)
	if err != nil {
		t.Fatalf("Acquire with nodes %s and %s of its own: %v", older, newer, err)
	}
	if lease.Node() != older {
		t.Errorf("took %s, want the older %s", lease.Node(), older)
	}
	if kids, _ := s.children("/twice"); len(kids) != 1 {
		t.Errorf("children %v, want only %s", kids, older)
	}
}

// TestFailedAcquireDeletesUnseenNode: when acquiring fails before the
// contender knows its node (a create whose answer was lost, then the
// retries ran out or the context ended), every node of its own is
// deleted all the same; another session's node with the same prefix is
// not touched.
func TestFailedAcquireDeletesUnseenNode(t *testing.T) {
	zkc := zktest.Start(t)
	s, other := connect(t, zkc.Hosts()), connect(t, zkc.Hosts())
	m := NewMutex(s, "/unseen", "me")
	ownNode(t, s, m)
	foreign := ownNode(t, other, m)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := m.Acquire(ctx, true); !errors.Is(err, context.Canceled) {
		t.Fatalf("Acquire with an ended context: %v", err)
	}
	if kids, _ := s.children("/unseen"); len(kids) != 1 || join("/unseen", kids[0]) != foreign {
		t.Errorf("children %v, want only the other session's %s", kids, foreign)
	}
}

// TestSemaphoreTurnEndsClean: a node of the semaphore's mutex that a lost
// create of this contender's left behind its turn goes with the turn;
// otherwise every other contender would wait behind it while this one
// holds its lease.
func TestSemaphoreTurnEndsClean(t *testing.T) {
	zkc := zktest.Start(t)
	s := connect(t, zkc.Hosts())
	m := NewSemaphore(s, "/sem-clean", "me", 2)
	turn, err := m.mutex.acquire(context.Background(), never)
	if err != nil {
		t.Fatal(err)
	}
	late := ownNode(t, s, m.mutex)
	m.endTurn(turn)
	if kids, _ := s.children(m.mutex.path); len(kids) != 0 {
		t.Errorf("mutex nodes %v left after the turn (the late one was %s)", kids, late)
	}
}
