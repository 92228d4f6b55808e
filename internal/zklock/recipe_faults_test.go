package zklock

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
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
	if _, _, err := m.take(turn, true, time.Now(), nil); !errors.Is(err, errTurnLost) {
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

// TestLockAndSemaphoreOnFreshPath races a lock and a semaphore of 2 on
// each of many brand-new paths: they do not exclude each other, so at
// most one of them may take the path; the other must refuse it with
// ErrSizeMismatch (both refusing is safe too).
func TestLockAndSemaphoreOnFreshPath(t *testing.T) {
	const paths = 40
	zkc := zktest.Start(t)
	sm, ss := connect(t, zkc.Hosts()), connect(t, zkc.Hosts())
	var both, lock, sem, neither int
	for i := range paths {
		p := fmt.Sprintf("/fresh/%d", i)
		ctx, cancel := context.WithTimeout(context.Background(), patience)
		got := make(chan acquired, 2)
		start := make(chan struct{})
		contend(ctx, "lock", func(ctx context.Context) (*Lease, error) {
			<-start
			return NewMutex(sm, p, "lock").Acquire(ctx, false)
		}, got)
		contend(ctx, "semaphore", func(ctx context.Context) (*Lease, error) {
			<-start
			return NewSemaphore(ss, p, "semaphore", 2).Acquire(ctx, false)
		}, got)
		close(start)
		held := map[string]*Lease{}
		for range 2 {
			r := <-got
			switch {
			case r.err == nil:
				held[r.who] = r.lease
			case !errors.Is(r.err, ErrSizeMismatch):
				t.Fatalf("%s on %s: %v", r.who, p, r.err)
			}
		}
		cancel()
		switch len(held) {
		case 2:
			both++
		case 0:
			neither++
		default:
			if held["lock"] != nil {
				lock++
			} else {
				sem++
			}
		}
		for _, l := range held {
			if err := l.Release(); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Logf("%d paths: both took it %d times, the lock alone %d, the semaphore alone %d, neither %d", paths, both, lock, sem, neither)
	if both > 0 {
		t.Errorf("a lock and a semaphore both took the same path %d times in %d", both, paths)
	}
}

// TestSizeDecidedAfterOwnNode: each side of the lock/semaphore check on
// its own. Each refuses P when the other's mark (the size, a lock's node)
// appeared after its early check but before its own node existed.
func TestSizeDecidedAfterOwnNode(t *testing.T) {
	zkc := zktest.Start(t)
	sm, ss := connect(t, zkc.Hosts()), connect(t, zkc.Hosts())
	ctx := context.Background()
	only := func(t *testing.T, p string, want *Lease) {
		t.Helper()
		kids, err := sm.children(p)
		if err != nil {
			t.Fatal(err)
		}
		if len(kids) != 1 || join(p, kids[0]) != want.Node() {
			t.Errorf("children %v, want only the holder's %s", kids, want.Node())
		}
	}

	t.Run("lock after a semaphore", func(t *testing.T) {
		sem, err := NewSemaphore(ss, "/after-sem", "semaphore", 2).Acquire(ctx, false)
		if err != nil {
			t.Fatal(err)
		}
		// As if the lock's early check had read P before the size was there.
		if _, err := NewMutex(sm, "/after-sem", "lock").acquire(ctx, always); !errors.Is(err, ErrSizeMismatch) {
			t.Errorf("lock: %v, want ErrSizeMismatch", err)
		}
		only(t, "/after-sem", sem)
	})
	t.Run("semaphore after a lock", func(t *testing.T) {
		lock, err := NewMutex(sm, "/after-lock", "lock").Acquire(ctx, false)
		if err != nil {
			t.Fatal(err)
		}
		// As if the semaphore's early check had listed P before the lock's
		// node was there, and then written its size.
		if _, err := ss.conn.Set(ss.abs("/after-lock"), []byte("2"), -1); err != nil {
			t.Fatal(err)
		}
		if _, err := NewSemaphore(ss, "/after-lock", "semaphore", 2).acquire(ctx, false); !errors.Is(err, ErrSizeMismatch) {
			t.Errorf("semaphore: %v, want ErrSizeMismatch", err)
		}
		only(t, "/after-lock", lock)
	})
}

// syncBuffer is a log that goroutines may write while a test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// TestWaiterSurvivesWriteError: the server a waiter is connected to
// crashes just after telling it that its predecessor is gone. The waiter
// reads that, and the request it sends in answer fails to be written
// (go-zookeeper hands the caller the socket's error, not
// ErrConnectionClosed). A retry on the same session works, with the
// default single retry, so the waiter must retry and take the lock.
func TestWaiterSurvivesWriteError(t *testing.T) {
	// The crashed server's last words are the firing of many watches
	// (noise), with the predecessor's deletion in the middle: the reset
	// has arrived by the time the waiter reads of the deletion, and its
	// connection is still busy reading when it writes. Should the reader
	// get to the end first all the same, the request fails with
	// ErrConnectionClosed instead, and the test tries again.
	const before, after, attempts = 500, 1000, 10
	zkc := zktest.Start(t)
	h := connect(t, zkc.Hosts())
	noise := func(from, to int, op func(p string) any) []any {
		var ops []any
		for i := from; i < to; i++ {
			ops = append(ops, op(fmt.Sprintf("/n%d", i)))
		}
		return ops
	}
	create := func(p string) any {
		return &zk.CreateRequest{Path: p, Acl: zk.WorldACL(zk.PermAll), Flags: zk.FlagEphemeral}
	}
	remove := func(p string) any { return &zk.DeleteRequest{Path: p, Version: -1} }
	for attempt := 1; attempt <= attempts; attempt++ {
		px := zktest.StartProxy(t, zkc.Servers[0].Addr())
		var log syncBuffer
		w := connectWith(t, px.Addr(), func(o *Options) {
			o.Logger = slog.New(slog.NewTextHandler(&log, &slog.HandlerOptions{Level: slog.LevelWarn}))
		})
		p := fmt.Sprintf("/write-error-%d", attempt)
		holder, err := NewMutex(h, p, "holder").Acquire(context.Background(), false)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := h.conn.Multi(noise(0, before+after, create)...); err != nil {
			t.Fatal(err)
		}
		for i := range before + after {
			if _, _, _, err := w.conn.ExistsW(w.abs(fmt.Sprintf("/n%d", i))); err != nil {
				t.Fatal(err)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), patience)
		got := make(chan acquired, 1)
		contend(ctx, "waiter", func(ctx context.Context) (*Lease, error) { return NewMutex(w, p, "waiter").Acquire(ctx, true) }, got)
		waitUntil(t, "the waiter queued", func() bool { kids, _ := h.children(p); return len(kids) == 2 })

		px.Stall()
		if _, err := h.conn.Multi(noise(0, before, remove)...); err != nil {
			t.Fatal(err)
		}
		if err := holder.Release(); err != nil {
			t.Fatal(err)
		}
		if _, err := h.conn.Multi(noise(before, before+after, remove)...); err != nil {
			t.Fatal(err)
		}
		px.Crash()
		r := <-got
		cancel()
		if r.err != nil {
			t.Fatalf("waiter: %v\nits log:\n%s", r.err, log.String())
		}
		if err := r.lease.Release(); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(log.String(), "write tcp") {
			t.Logf("attempt %d: the waiter's write failed, and it took the lock", attempt)
			return
		}
		t.Logf("attempt %d: no write error, the connection's end was seen first; again\n%s", attempt, log.String())
	}
	t.Fatalf("no write error in %d attempts", attempts)
}
