package zklock

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/lockex/lockex/internal/zktest"
)

// A holder rewrites its node every granted/heartbeats (200ms with the test
// servers' 4s sessions). The waiter that watches that node must sleep
// through the beats: only the node's deletion changes what it waits for.
// Woken by each beat, it listed the lock again and logged "waiting for the
// lock" twice a second with the default timeout.

// waits counts the recipe's Waiting reports: one per round that ends
// waiting.
type waits struct {
	nopObserver
	n atomic.Int32
}

func (w *waits) Waiting(int) { w.n.Add(1) }

// beatsOn waits until the node at p has been rewritten n more times, by
// its holder's beats.
func beatsOn(t *testing.T, s *Session, p string, n int32) {
	t.Helper()
	version := func() int32 {
		ok, stat, err := s.conn.Exists(s.abs(p))
		if err != nil || !ok {
			t.Fatalf("%s: exists %v, %v", p, ok, err)
		}
		return stat.Version
	}
	want := version() + n
	waitUntil(t, "the holder's beats", func() bool { return version() >= want })
}

// TestWaiterSleepsThroughBeats: a mutex waiter behind a beating holder
// makes one round, not one per beat, and still wakes for the release.
func TestWaiterSleepsThroughBeats(t *testing.T) {
	zkc := zktest.Start(t)
	h := connect(t, zkc.Hosts())
	holder, err := NewMutex(h, "/beats", "holder").Acquire(context.Background(), false)
	if err != nil {
		t.Fatal(err)
	}
	counted := &waits{}
	w := connectWith(t, zkc.Hosts(), func(o *Options) { o.Observer = counted })
	got := waitBehind(t, w, h, "/beats")
	beatsOn(t, h, holder.Node(), 8)
	if n := counted.n.Load(); n != 1 {
		t.Errorf("the waiter made %d rounds ending in a wait while the holder beat 8 times, want 1", n)
	}
	if err := holder.Release(); err != nil {
		t.Fatal(err)
	}
	result(t, got)
}

// TestSemaphoreWaiterSleepsThroughBeats: a semaphore contender that holds
// the serialising mutex (its turn) and waits for a lease watches its own
// turn node, which its own turn's beats rewrite: it too makes one round,
// and takes the lease once one is free.
func TestSemaphoreWaiterSleepsThroughBeats(t *testing.T) {
	zkc := zktest.Start(t)
	h := connect(t, zkc.Hosts())
	holder, err := NewSemaphore(h, "/sem-beats", "holder", 1).Acquire(context.Background(), false)
	if err != nil {
		t.Fatal(err)
	}
	counted := &waits{}
	w := connectWith(t, zkc.Hosts(), func(o *Options) { o.Observer = counted })
	ctx, cancel := context.WithTimeout(context.Background(), 2*patience)
	t.Cleanup(cancel)
	got := make(chan acquired, 1)
	contend(ctx, "waiter", func(ctx context.Context) (*Lease, error) {
		return NewSemaphore(w, "/sem-beats", "waiter", 1).Acquire(ctx, true)
	}, got)
	turnDir := "/sem-beats-__lock__"
	var turn string
	waitUntil(t, "the waiter's turn", func() bool {
		kids, err := h.children(turnDir)
		if err != nil || len(kids) != 1 {
			return false
		}
		turn = turnDir + "/" + kids[0]
		return counted.n.Load() > 0
	})
	beatsOn(t, h, turn, 8)
	if n := counted.n.Load(); n != 1 {
		t.Errorf("the waiter made %d rounds ending in a wait while its turn beat 8 times, want 1", n)
	}
	if err := holder.Release(); err != nil {
		t.Fatal(err)
	}
	result(t, got)
}
