package zklock

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/lockex/lockex/internal/zktest"
)

// The handoff as issue 13 made it quick, each shortcut against a real
// ZooKeeper: a lease that counts before its first beat only while the
// evidence is young, a lease past its deadline never handed out as held,
// the own node looked at in the same round trip as the listing, and the
// lock's node created only when it is missing.

// disconnects counts the session's disconnects.
type disconnects struct {
	nopObserver
	n atomic.Int32
}

func (d *disconnects) Disconnected() { d.n.Add(1) }

// waiterOnProxy is a session through a proxy, with a stop grace of a
// second (a budget of 2.6s with the test servers' 4s sessions), whose
// disconnects are counted.
func waiterOnProxy(t *testing.T, zkc *zktest.Cluster) (*Session, *zktest.Proxy, *disconnects) {
	t.Helper()
	px := zktest.StartProxy(t, zkc.Servers[0].Addr())
	drops := &disconnects{}
	w := connectWith(t, px.Addr(), func(o *Options) { o.StopGrace = time.Second; o.Observer = drops })
	return w, px, drops
}

// waitBehind starts w acquiring the mutex at p, which look sees held, and
// returns once w's node is queued; its result arrives on the channel.
func waitBehind(t *testing.T, w, look *Session, p string) <-chan acquired {
	t.Helper()
	kids, err := look.children(p)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*patience)
	t.Cleanup(cancel)
	got := make(chan acquired, 1)
	contend(ctx, "waiter", func(ctx context.Context) (*Lease, error) { return NewMutex(w, p, "waiter").Acquire(ctx, true) }, got)
	waitUntil(t, "the waiter queued", func() bool { now, _ := look.children(p); return len(now) == len(kids)+1 })
	return got
}

// result waits for an Acquire's result, which must be a lease.
func result(t *testing.T, got <-chan acquired) *Lease {
	t.Helper()
	select {
	case r := <-got:
		if r.err != nil {
			t.Fatalf("%s: %v", r.who, r.err)
		}
		t.Cleanup(func() { _ = r.lease.Release() })
		return r.lease
	case <-time.After(patience):
		t.Fatalf("no lease within %s", patience)
		return nil
	}
}

// budget is the time a lease on s counts from its evidence (lease.go).
func budget(s *Session) time.Duration {
	g := s.Granted()
	return g - s.opts.StopGrace - g/10
}

// freshEvidence writes on s until its evidence is younger than half the
// budget (wire.go: a write after a sync), as it is for a waiter whose
// turn comes soon after its create.
func freshEvidence(t *testing.T, s *Session) {
	t.Helper()
	scratch, err := s.conn.Create(s.abs("/scratch-"+newPrefix()), nil, zk.FlagEphemeral, s.acl)
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "young evidence", func() bool {
		if _, err := s.conn.Set(scratch, nil, -1); err != nil {
			t.Fatal(err)
		}
		return !s.live.aging(time.Now())
	})
}

// evidenceOlderThan waits until s's evidence is older than d: a waiter
// writes nothing, so its evidence only ages.
func evidenceOlderThan(t *testing.T, s *Session, d time.Duration) {
	t.Helper()
	waitUntil(t, fmt.Sprintf("evidence older than %s", d), func() bool {
		_, evidence := s.live.snapshot()
		return time.Since(evidence) > d
	})
}

// TestYoungEvidenceLeaseCountsAtOnce: a waiter whose evidence is young when
// its turn comes holds at once, its first beat going out after. Here no
// write of its ever commits (the server answers reads, as one cut off from
// its leader does): the lease is handed out all the same, without waiting
// for the beat, and is lost by its deadline, while the server still has
// the session.
func TestYoungEvidenceLeaseCountsAtOnce(t *testing.T) {
	zkc := zktest.Start(t)
	w, px, drops := waiterOnProxy(t, zkc)
	h, look := connect(t, zkc.Hosts()), connect(t, zkc.Hosts())
	holder := hold(t, h, "/young")
	got := waitBehind(t, w, look, "/young")
	freshEvidence(t, w)

	px.HoldWrites()
	before := drops.n.Load()
	if err := holder.Release(); err != nil {
		t.Fatal(err)
	}
	l := result(t, got)
	if n := drops.n.Load() - before; n > 0 {
		t.Fatalf("young evidence, and the lease was handed out only after %d disconnects: it waited for its beat", n)
	}
	if l.Err() != nil {
		t.Fatalf("young evidence, and the lease came back lost: %v", l.Err())
	}
	waitUntil(t, "the first beat held", func() bool { return px.HeldWrites() > 0 })

	lostWithin(t, l, patience)
	left := time.Until(l.KillBy())
	if !errors.Is(l.Err(), ErrSuspendedTooLong) {
		t.Fatalf("lost with %v, want suspend_deadline", l.Err())
	}
	if left <= 0 {
		t.Errorf("lost %s past KillBy, when the server may already have expired the session", -left)
	}
	ok, stat, err := look.conn.Exists(look.abs(l.Node()))
	switch {
	case err != nil:
		t.Fatal(err)
	case !ok || stat.EphemeralOwner != l.session:
		t.Errorf("the node had gone with the session when the holder was told to stop")
	case stat.Version != 0:
		t.Errorf("the node was written %d times: a beat committed, so the test proves nothing", stat.Version)
	}
	px.Pass()
}

// TestOldEvidenceLeaseWaitsForItsBeat: a waiter whose evidence is older
// than half the budget when its turn comes beats before its lease counts.
// With its writes held, the lease comes only once the beat has failed
// (the connection was given up), not on the old evidence.
func TestOldEvidenceLeaseWaitsForItsBeat(t *testing.T) {
	zkc := zktest.Start(t)
	w, px, drops := waiterOnProxy(t, zkc)
	h, look := connect(t, zkc.Hosts()), connect(t, zkc.Hosts())
	holder := hold(t, h, "/old")
	got := waitBehind(t, w, look, "/old")
	evidenceOlderThan(t, w, budget(w)/2)

	px.HoldWrites()
	before := drops.n.Load()
	if err := holder.Release(); err != nil {
		t.Fatal(err)
	}
	l := result(t, got)
	if drops.n.Load() == before {
		t.Fatal("old evidence, and the lease was handed out while its beat was held")
	}
	if err := l.Err(); err != nil && !errors.Is(err, ErrSuspendedTooLong) {
		t.Fatalf("lost with %v; only the deadline, spent while the beat was held, may end it", err)
	}
	px.Pass()
}

// TestOldEvidenceRenewedBeforeTheLeaseCounts: a waiter that waited longer
// than its whole budget is not the worse for it when its beat commits: the
// beat is written before the lease counts, and the lease counts on the
// evidence it brought.
func TestOldEvidenceRenewedBeforeTheLeaseCounts(t *testing.T) {
	zkc := zktest.Start(t)
	w, _, _ := waiterOnProxy(t, zkc)
	h, look := connect(t, zkc.Hosts()), connect(t, zkc.Hosts())
	holder := hold(t, h, "/renewed")
	got := waitBehind(t, w, look, "/renewed")
	evidenceOlderThan(t, w, budget(w))
	_, old := w.live.snapshot()

	if err := holder.Release(); err != nil {
		t.Fatal(err)
	}
	l := result(t, got)
	_, stat, err := look.conn.Get(look.abs(l.Node()))
	if err != nil {
		t.Fatal(err)
	}
	if stat.Version < 1 {
		t.Error("the lease was handed out before its first beat was written")
	}
	if l.Err() != nil {
		t.Errorf("lost at once after a long wait although the beat committed: %v", l.Err())
	}
	if _, now := w.live.snapshot(); !now.After(old) {
		t.Errorf("evidence still %s old after the beat", time.Since(now).Round(time.Millisecond))
	}
}

// TestLeasePastItsDeadlineComesBackLost: a waiter that waited longer than
// its whole budget and whose beat cannot commit gets a lease that is lost
// already when Acquire returns: nothing may start on it.
func TestLeasePastItsDeadlineComesBackLost(t *testing.T) {
	zkc := zktest.Start(t)
	w, px, _ := waiterOnProxy(t, zkc)
	h, look := connect(t, zkc.Hosts()), connect(t, zkc.Hosts())
	holder := hold(t, h, "/overdue")
	got := waitBehind(t, w, look, "/overdue")
	evidenceOlderThan(t, w, budget(w))

	px.HoldWrites()
	if err := holder.Release(); err != nil {
		t.Fatal(err)
	}
	l := result(t, got)
	select {
	case <-l.Done():
	default:
		t.Fatal("handed out as held although its deadline had passed and no beat committed")
	}
	if !errors.Is(l.Err(), ErrSuspendedTooLong) {
		t.Errorf("lost with %v, want suspend_deadline", l.Err())
	}
	px.Pass()
}

// TestOwnNodeDeletedBeforeTheRound: an operator deletes a waiter's node
// after the watch that wakes it has fired but before it looks: the waiter
// must not take the lock on the strength of a node it no longer has, while
// the contender behind it, now first, holds. It queues again, at the back.
func TestOwnNodeDeletedBeforeTheRound(t *testing.T) {
	zkc := zktest.Start(t)
	w, px, _ := waiterOnProxy(t, zkc)
	h, c, op := connect(t, zkc.Hosts()), connect(t, zkc.Hosts()), connect(t, zkc.Hosts())
	holder := hold(t, h, "/own-deleted")
	gotW := waitBehind(t, w, op, "/own-deleted")
	gotC := waitBehind(t, c, op, "/own-deleted")
	kids, err := op.children("/own-deleted")
	if err != nil {
		t.Fatal(err)
	}
	var mine string
	for _, k := range kids {
		if ok, stat, err := op.conn.Exists(op.abs(join("/own-deleted", k))); err == nil && ok && stat.EphemeralOwner == w.ID() {
			mine = join("/own-deleted", k)
		}
	}
	if mine == "" {
		t.Fatalf("no node of the waiter's among %v", kids)
	}

	px.Stall() // the holder's release reaches the waiter only after the delete
	if err := op.conn.Delete(op.abs(mine), -1); err != nil {
		t.Fatal(err)
	}
	if err := holder.Release(); err != nil {
		t.Fatal(err)
	}
	behind := result(t, gotC)
	px.Pass()
	select {
	case r := <-gotW:
		t.Fatalf("the waiter whose node was deleted took the lock while the next one holds it (%v, %v)", r.lease, r.err)
	case <-time.After(settle):
	}
	if err := behind.Release(); err != nil {
		t.Fatal(err)
	}
	if l := result(t, gotW); l.Node() == mine {
		t.Errorf("took the lock on %s, the node that was deleted", mine)
	}
}

// TestLockPathUnderParentWithoutCreate: an operator made the lock paths in
// a parent where lockex may not create. A lock whose node exists is used
// as it is: a create of it, which the server checks against the parent's
// ACL before it looks whether the node exists, would be refused.
func TestLockPathUnderParentWithoutCreate(t *testing.T) {
	zkc := zktest.Start(t)
	admin := connectWith(t, zkc.Hosts(), func(o *Options) { o.User, o.Password = "admin", "secret" })
	everyone := zk.WorldACL(zk.PermAll)
	for _, n := range []struct {
		path string
		data string
		acl  []zk.ACL
	}{
		{"/locks", "", append(zk.AuthACL(zk.PermAll), zk.WorldACL(zk.PermRead)...)},
		{"/locks/job", "", everyone},
		{"/locks/pool", "2", everyone},
		{"/locks/pool-__lock__", "", everyone},
	} {
		if _, err := admin.conn.Create(n.path, []byte(n.data), 0, n.acl); err != nil {
			t.Fatal(err)
		}
	}
	s := connect(t, zkc.Hosts())
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	lock, err := NewMutex(s, "/locks/job", "me").Acquire(ctx, false)
	if err != nil {
		t.Fatalf("lock in a provisioned path: %v", err)
	}
	if err := lock.Release(); err != nil {
		t.Fatal(err)
	}
	lease, err := NewSemaphore(s, "/locks/pool", "me", 2).Acquire(ctx, false)
	if err != nil {
		t.Fatalf("semaphore in a provisioned path: %v", err)
	}
	if err := lease.Release(); err != nil {
		t.Fatal(err)
	}
}

// TestMissingLockPathCreated: a lock path that does not exist, parents and
// chroot included, is created by the first contender, for a lock and for
// a semaphore, which writes its size on it.
func TestMissingLockPathCreated(t *testing.T) {
	zkc := zktest.Start(t)
	s := connectWith(t, zkc.Hosts(), func(o *Options) { o.Chroot = "/chroot/missing" })
	look := connect(t, zkc.Hosts())
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	lock, err := NewMutex(s, "/a/b/lock", "me").Acquire(ctx, false)
	if err != nil {
		t.Fatalf("lock on a missing path: %v", err)
	}
	lease, err := NewSemaphore(s, "/a/c/pool", "me", 2).Acquire(ctx, false)
	if err != nil {
		t.Fatalf("semaphore on a missing path: %v", err)
	}
	for _, l := range []*Lease{lock, lease} {
		if ok, _, err := look.conn.Exists("/chroot/missing" + l.Node()); err != nil || !ok {
			t.Errorf("%s not under the chroot: exists %v, %v", l.Node(), ok, err)
		}
	}
	if data, _, err := look.conn.Get("/chroot/missing/a/c/pool"); err != nil || string(data) != "2" {
		t.Errorf("semaphore's node holds %q, %v; want its size 2", data, err)
	}
}

// TestReleaseRightAfterAcquire: a lease released before its first beat
// (which went out beside the workload's start) is not reported lost when
// that beat, or the node's watch set after it, finds the node gone; nor
// when that beat's answer would have its later beats stamp the node with
// since when it holds (§3.2); and no node is left behind.
func TestReleaseRightAfterAcquire(t *testing.T) {
	for _, tc := range []struct {
		name string
		tune func(*Options)
	}{{"plain", nil}, {"stamped", withSince}} {
		t.Run(tc.name, func(t *testing.T) {
			const leases = 30
			zkc := zktest.Start(t)
			s := connectWith(t, zkc.Hosts(), tc.tune)
			var released []*Lease
			for range leases {
				l, err := NewMutex(s, "/released", "h:1 lockex/v1").Acquire(context.Background(), false)
				if err != nil {
					t.Fatal(err)
				}
				if err := l.Release(); err != nil {
					t.Fatal(err)
				}
				released = append(released, l)
			}
			time.Sleep(settle) // the span in which a late beat or watch would report
			for i, l := range released {
				if l.Err() != nil {
					t.Errorf("lease %d lost after its release: %v", i, l.Err())
				}
			}
			if kids, err := s.children("/released"); err != nil || len(kids) != 0 {
				t.Errorf("children %v, %v; want none", kids, err)
			}
		})
	}
}

// TestNodeDeletedAtHandout: an operator deletes the holder's node at
// moments around the hand-out, before, between and after its first beat
// and the node's watch, which is set after that beat's answer. Every
// deletion ends the lease as node_deleted.
func TestNodeDeletedAtHandout(t *testing.T) {
	const leases = 30
	zkc := zktest.Start(t)
	s, op := connect(t, zkc.Hosts()), connect(t, zkc.Hosts())
	for i := range leases {
		l, err := NewMutex(s, "/deleted-at-handout", "me").Acquire(context.Background(), false)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(i%6) * time.Millisecond) // spreads the deletion over the beat's round trip
		if err := op.conn.Delete(op.abs(l.Node()), -1); err != nil {
			t.Fatal(err)
		}
		lostWithin(t, l, patience)
		if !errors.Is(l.Err(), ErrNodeDeleted) {
			t.Fatalf("lease %d lost with %v, want node_deleted", i, l.Err())
		}
	}
}

// TestSemaphoresOfTwoSizesOnFreshPath races semaphores of 2 and of 3 on
// each of many brand-new paths: P is created, with a size, only by the
// one whose read found it missing; the other reads the size and refuses.
func TestSemaphoresOfTwoSizesOnFreshPath(t *testing.T) {
	const paths = 40
	zkc := zktest.Start(t)
	s2, s3 := connect(t, zkc.Hosts()), connect(t, zkc.Hosts())
	for i := range paths {
		p := fmt.Sprintf("/fresh-sizes/%d", i)
		ctx, cancel := context.WithTimeout(context.Background(), patience)
		got := make(chan acquired, 2)
		start := make(chan struct{})
		contend(ctx, "size 2", func(ctx context.Context) (*Lease, error) {
			<-start
			return NewSemaphore(s2, p, "two", 2).Acquire(ctx, false)
		}, got)
		contend(ctx, "size 3", func(ctx context.Context) (*Lease, error) {
			<-start
			return NewSemaphore(s3, p, "three", 3).Acquire(ctx, false)
		}, got)
		close(start)
		var held []*Lease
		for range 2 {
			r := <-got
			switch {
			case r.err == nil:
				held = append(held, r.lease)
			case !errors.Is(r.err, ErrSizeMismatch):
				t.Fatalf("%s on %s: %v", r.who, p, r.err)
			}
		}
		cancel()
		if len(held) != 1 {
			t.Errorf("%s: %d of the two semaphores took it, want exactly one", p, len(held))
		}
		for _, l := range held {
			if err := l.Release(); err != nil {
				t.Fatal(err)
			}
		}
	}
}
