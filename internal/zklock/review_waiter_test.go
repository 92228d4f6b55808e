package zklock

import (
	"bytes"
	"context"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/lockex/lockex/internal/zktest"
)

// Adversarial review of cff0c76 (a waiter sleeps through its predecessor's
// beats): the watch that existsUntilGone sets again on every data change,
// against disconnects, reconnects, expiries, deletions and cancellation.

// rearmers is how many existsUntilGone goroutines are alive in this test
// binary: each sets its watch again on every beat of the node it watches.
func rearmers() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return bytes.Count(buf[:n], []byte("(*Session).existsUntilGone.func1"))
		}
		buf = make([]byte, 2*len(buf))
	}
}

// TestReviewSemaphoreTurnWatchesPileUpPerRound: a contender that holds the
// turn and waits for a lease runs a round whenever P's children change
// while all leases stay held (a stray child, a tool, a mutex contender
// refused on P). Each such round starts another existsUntilGone on the
// turn's node, and the earlier ones never end while the turn lasts: every
// one of them sets a watch again on every beat of the turn. Before the
// change each round left only a one-shot watch, gone at the next beat.
func TestReviewSemaphoreTurnWatchesPileUpPerRound(t *testing.T) {
	const rounds = 10
	zkc := zktest.Start(t)
	h, op := connect(t, zkc.Hosts()), connect(t, zkc.Hosts())
	holder, err := NewSemaphore(h, "/sem-pile", "holder", 1).Acquire(context.Background(), false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = holder.Release() })
	counted := &waits{}
	w := connectWith(t, zkc.Hosts(), func(o *Options) { o.Observer = counted })
	ctx, cancel := context.WithTimeout(context.Background(), 4*patience)
	t.Cleanup(cancel)
	got := make(chan acquired, 1)
	contend(ctx, "waiter", func(ctx context.Context) (*Lease, error) {
		return NewSemaphore(w, "/sem-pile", "waiter", 1).Acquire(ctx, true)
	}, got)
	waitUntil(t, "the waiter holding the turn and waiting", func() bool { return counted.n.Load() == 1 })
	// The round reports that it waits before its watch on the turn is
	// set: the count to compare with is the first round's, once armed.
	waitUntil(t, "the first round's watch on the turn", func() bool { return rearmers() >= 1 })
	base := rearmers()
	for i := range rounds {
		// Each change ends the waiter's children watch; it sees a full
		// semaphore again and waits again.
		stray := op.abs("/sem-pile/stray")
		if i%2 == 0 {
			_, err = op.conn.Create(stray, nil, 0, zk.WorldACL(zk.PermAll))
		} else {
			err = op.conn.Delete(stray, -1)
		}
		if err != nil {
			t.Fatal(err)
		}
		want := int32(i + 2)
		waitUntil(t, "the waiter's next round", func() bool { return counted.n.Load() >= want })
	}
	turn, err := h.children("/sem-pile-__lock__")
	if err != nil || len(turn) != 1 {
		t.Fatalf("turn queue %v, %v", turn, err)
	}
	beatsOn(t, h, "/sem-pile-__lock__/"+turn[0], 5)
	if n := rearmers() - base; n > 0 {
		t.Errorf("after %d rounds under one turn, %d more goroutines set a watch on the turn node again at every beat (%d in all); want none more than after the first round", rounds, n, rearmers())
	}
	if err := holder.Release(); err != nil {
		t.Fatal(err)
	}
	result(t, got)
}

// TestReviewWaiterQueuesAgainWhenWoken: an operator deletes a waiting
// mutex contender's node while the holder holds and beats. The waiter
// sleeps through the beats (as kazoo's does: it watches its predecessor
// only, docs/design.md §3.2), and once the holder leaves it finds no node
// of its own, queues again and takes the free lock.
func TestReviewWaiterQueuesAgainWhenWoken(t *testing.T) {
	zkc := zktest.Start(t)
	h, op := connect(t, zkc.Hosts()), connect(t, zkc.Hosts())
	holder := hold(t, h, "/own-deleted")
	w := connect(t, zkc.Hosts())
	got := waitBehind(t, w, op, "/own-deleted")
	kids, err := op.children("/own-deleted")
	if err != nil || len(kids) != 2 {
		t.Fatalf("queue %v, %v", kids, err)
	}
	waiter := kids[0]
	if waiter == lowest(kids) {
		waiter = kids[1]
	}
	if err := op.conn.Delete(op.abs("/own-deleted/"+waiter), -1); err != nil {
		t.Fatal(err)
	}
	beatsOn(t, h, holder.Node(), 3)
	if err := holder.Release(); err != nil {
		t.Fatal(err)
	}
	lease := result(t, got)
	if name := lease.Node()[strings.LastIndexByte(lease.Node(), '/')+1:]; name == waiter {
		t.Errorf("the waiter holds %s, the node the operator deleted", name)
	}
}

// TestReviewNoRearmerPerBeatAndNoneAfterCancel: a waiter behind a beating
// holder keeps exactly one goroutine through many beats, and none once its
// acquire is cancelled (also when the cancel falls on a re-arm).
func TestReviewNoRearmerPerBeatAndNoneAfterCancel(t *testing.T) {
	zkc := zktest.Start(t)
	h, op := connect(t, zkc.Hosts()), connect(t, zkc.Hosts())
	holder := hold(t, h, "/cancel-rearm")
	w := connect(t, zkc.Hosts())
	base := rearmers()
	for attempt := range 5 {
		ctx, cancel := context.WithCancel(context.Background())
		got := make(chan acquired, 1)
		contend(ctx, "waiter", func(ctx context.Context) (*Lease, error) {
			return NewMutex(w, "/cancel-rearm", "waiter").Acquire(ctx, true)
		}, got)
		waitUntil(t, "the waiter queued", func() bool { kids, _ := op.children("/cancel-rearm"); return len(kids) == 2 })
		beatsOn(t, h, holder.Node(), 10)
		if n := rearmers() - base; n != 1 {
			t.Errorf("attempt %d: %d goroutines setting watches after 10 beats, want 1", attempt, n)
		}
		// Cancel just after a beat, while the re-arm may be in flight.
		beatsOn(t, h, holder.Node(), 1)
		cancel()
		if r := <-got; r.err == nil {
			t.Fatalf("attempt %d: acquired behind a holder", attempt)
		}
		beatsOn(t, h, holder.Node(), 3)
		waitUntil(t, "the goroutines to end", func() bool { return rearmers() == base })
	}
}

// TestReviewPredecessorGoneBeforeTheRearm: the waiter's connection stalls
// after its predecessor's beat fired the watch and before the
// predecessor is deleted; on Pass the waiter reads the data change, and
// its re-arm finds the node gone (or, had the client given the connection
// up, the watch is set again on the next and fires as a deletion).
func TestReviewPredecessorGoneBeforeTheRearm(t *testing.T) {
	zkc := zktest.Start(t)
	for attempt := range 5 {
		w, px, _ := waiterOnProxy(t, zkc)
		h, op := connect(t, zkc.Hosts()), connect(t, zkc.Hosts())
		p := "/gone-before-rearm-" + string(rune('a'+attempt))
		holder := hold(t, h, p)
		got := waitBehind(t, w, op, p)
		px.Stall()
		beatsOn(t, h, holder.Node(), 1)
		if err := holder.Release(); err != nil {
			t.Fatal(err)
		}
		px.Pass()
		l := result(t, got)
		if err := l.Release(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestReviewPredecessorDeletedWhileOnAnotherServer: the waiter's session
// moves to another server address (a second proxy) while its predecessor
// beats and is deleted; go-zookeeper sets the watch again there
// (SetWatches with lastZxid) and the deletion reaches the waiter.
func TestReviewPredecessorDeletedWhileOnAnotherServer(t *testing.T) {
	zkc := zktest.Start(t)
	px1 := zktest.StartProxy(t, zkc.Servers[0].Addr())
	px2 := zktest.StartProxy(t, zkc.Servers[0].Addr())
	drops := &disconnects{}
	w := connectWith(t, px1.Addr()+","+px2.Addr(), func(o *Options) {
		o.Observer = drops
		o.ConnectTimeout, o.Retries = 10*time.Second, 10
	})
	h, op := connect(t, zkc.Hosts()), connect(t, zkc.Hosts())
	holder := hold(t, h, "/moved")
	got := waitBehind(t, w, op, "/moved")
	first := w.conn.Server()
	stalled, other := px1, px2
	if first == px2.Addr() {
		stalled, other = px2, px1
	}
	other.Stall()
	stalled.Stall()
	beatsOn(t, h, holder.Node(), 3)
	if err := holder.Release(); err != nil {
		t.Fatal(err)
	}
	stalled.Cut()
	other.Pass()
	id := w.ID()
	l := result(t, got)
	if w.conn.Server() == first {
		t.Errorf("the waiter is still on %s; the test meant to move it", first)
	}
	if w.ID() != id || drops.n.Load() == 0 {
		t.Errorf("session %#x → %#x, %d disconnects: the test meant a reconnect of the same session", id, w.ID(), drops.n.Load())
	}
	stalled.Pass()
	_ = l
}

// TestReviewTurnDeletedWhileDisconnected: the contender holding the
// semaphore's turn is cut off; an operator deletes its turn node, the next
// contender takes the turn and, once a lease is free, the lease. Back on a
// connection, the first must see its turn lost (the watch set again with
// SetWatches fires as a deletion), not take a second lease.
func TestReviewTurnDeletedWhileDisconnected(t *testing.T) {
	zkc := zktest.Start(t)
	px := zktest.StartProxy(t, zkc.Servers[0].Addr())
	h1, h2, b, op := connect(t, zkc.Hosts()), connect(t, zkc.Hosts()), connect(t, zkc.Hosts()), connect(t, zkc.Hosts())
	a := connectWith(t, px.Addr(), func(o *Options) { o.ConnectTimeout, o.Retries = 10*time.Second, 10 })
	ctx, cancel := context.WithTimeout(context.Background(), 3*patience)
	defer cancel()
	held, got := fullSemaphoreWithTwoWaiters(t, ctx, "/sem-cut-turn", h1, h2, a, b)
	kids, err := op.children("/sem-cut-turn-__lock__")
	if err != nil {
		t.Fatal(err)
	}
	px.Stall()
	if err := op.conn.Delete(op.abs(join("/sem-cut-turn-__lock__", lowest(kids))), -1); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "b holding the turn", func() bool { _, first := semaphoreQueue(t, op, "/sem-cut-turn", b); return first })
	px.Cut()
	px.Pass()
	expectOneAtATime(t, held, got)
	if leases, _ := op.children("/sem-cut-turn"); len(leases) > 2 {
		t.Errorf("%d leases of a semaphore of 2: %v", len(leases), leases)
	}
}

// TestReviewWaiterSessionExpiresWhileWaiting: the waiter's session expires
// behind a stalled connection while its predecessor beats. go-zookeeper
// ends every watch (EventNotWatching) when it learns of the expiry; the
// waiter must run a round then and queue again with its new session while
// the holder still holds, not sleep until the holder leaves.
func TestReviewWaiterSessionExpiresWhileWaiting(t *testing.T) {
	zkc := zktest.Start(t)
	px := zktest.StartProxy(t, zkc.Servers[0].Addr())
	w := connectWith(t, px.Addr(), func(o *Options) { o.ConnectTimeout, o.Retries = 10*time.Second, 10 })
	h, op := connect(t, zkc.Hosts()), connect(t, zkc.Hosts())
	holder := hold(t, h, "/expired-waiter")
	got := waitBehind(t, w, op, "/expired-waiter")
	old := w.ID()
	px.Stall()
	waitUntil(t, "the waiter's node to go with its session", func() bool {
		kids, _ := op.children("/expired-waiter")
		return len(kids) == 1
	})
	px.Pass()
	waitUntil(t, "the waiter queued again with a new session", func() bool {
		kids, _ := op.children("/expired-waiter")
		return len(kids) == 2 && w.ID() != old
	})
	if err := holder.Release(); err != nil {
		t.Fatal(err)
	}
	result(t, got)
}
