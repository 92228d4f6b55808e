package zklock

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/go-zookeeper/zk"
	"github.com/lockex/lockex/internal/zktest"
)

// The session named old below stands for an earlier incarnation that died
// with its session still alive on the server: it made its nodes and then
// went quiet (no beats), and their data "me" is what the restarted
// contender (EarlierSelf) takes for its own.

// leftBehind creates the node a dead incarnation left at parent/name
// (sequential if seq), with data "me".
func leftBehind(t *testing.T, old *Session, parent, name string, seq bool) string {
	t.Helper()
	flags := int32(zk.FlagEphemeral)
	if seq {
		flags |= zk.FlagSequence
	}
	p, err := old.conn.Create(old.abs(join(parent, name)), []byte("me"), flags, zk.WorldACL(zk.PermAll))
	if err != nil {
		t.Fatal(err)
	}
	return old.rel(p)
}

// ownedBy lists the children of parent that s's session owns.
func ownedBy(t *testing.T, s *Session, parent string) []string {
	t.Helper()
	kids, err := s.children(parent)
	if err != nil {
		t.Fatal(err)
	}
	var own []string
	for _, k := range kids {
		if ok, stat, err := s.conn.Exists(s.abs(join(parent, k))); err == nil && ok && stat.EphemeralOwner == s.ID() {
			own = append(own, k)
		}
	}
	return own
}

func gone(t *testing.T, s *Session, p string) bool {
	t.Helper()
	ok, _, err := s.conn.Exists(s.abs(p))
	if err != nil {
		t.Fatal(err)
	}
	return !ok
}

// deletions records the observer's EarlierDeleted reports.
type deletions struct {
	nopObserver
	mu    sync.Mutex
	nodes []string
}

func (d *deletions) EarlierDeleted(node, identifier string, session int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.nodes = append(d.nodes, node)
}

func (d *deletions) got() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.nodes)
}

// restarted is a session whose contender recognises data "me" as its own
// earlier incarnation's, inside chroot ("" for none).
func restarted(t *testing.T, hosts, chroot string) (*Session, *deletions) {
	d := &deletions{}
	return connectWith(t, hosts, func(o *Options) {
		o.Chroot, o.Observer = chroot, d
		o.EarlierSelf = func(data []byte) bool { return string(data) == "me" }
	}), d
}

func acquireAsync(s *Session, acquire func(context.Context) (*Lease, error)) (<-chan acquired, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	out := make(chan acquired, 1)
	contend(ctx, "", acquire, out)
	return out, cancel
}

// TestTakeOverMutex: the earlier incarnation's holder node and its stray
// waiter node are deleted as the restarted contender starts, so the
// waiter between them holds at once; the restarted one queues behind it.
// Nodes of the own session and other data stay.
func TestTakeOverMutex(t *testing.T) {
	zkc := zktest.Start(t)
	for _, chroot := range []string{"", "/chroot"} {
		t.Run("chroot="+chroot, func(t *testing.T) {
			const p = "/takeover/mutex"
			tune := func(o *Options) { o.Chroot = chroot }
			old, other := connectWith(t, zkc.Hosts(), tune), connectWith(t, zkc.Hosts(), tune)
			if _, err := old.ensurePath(p, nil); err != nil {
				t.Fatal(err)
			}
			oldHolder := leftBehind(t, old, p, newPrefix()+"__lock__", true)
			waiter, cancelW := acquireAsync(other, func(ctx context.Context) (*Lease, error) {
				return NewMutex(other, p, "other").Acquire(ctx, true)
			})
			defer cancelW()
			waitUntil(t, "the waiter queued", func() bool { kids, _ := old.children(p); return len(kids) == 2 })
			// A second node of the old incarnation, queued behind the waiter.
			oldWaiter := leftBehind(t, old, p, newPrefix()+"__lock__", true)

			s, d := restarted(t, zkc.Hosts(), chroot)
			// A node of the restarted session itself with the same data
			// (as a lost create would leave) is never taken over.
			own, err := s.conn.Create(s.abs(p+"/own__lock__"), []byte("me"), zk.FlagEphemeral|zk.FlagSequence, zk.WorldACL(zk.PermAll))
			if err != nil {
				t.Fatal(err)
			}
			mine, cancelS := acquireAsync(s, func(ctx context.Context) (*Lease, error) {
				return NewMutex(s, p, "me").Acquire(ctx, true)
			})
			defer cancelS()
			w := result(t, waiter)
			// The waiter may hold as soon as the first node went: the
			// look is over once the restarted contender has its node.
			waitUntil(t, "the restarted contender queued", func() bool { return len(ownedBy(t, s, p)) == 2 })
			if !gone(t, old, oldHolder) || !gone(t, old, oldWaiter) {
				t.Errorf("the old incarnation's nodes %s, %s are still there", oldHolder, oldWaiter)
			}
			if got := d.got(); len(got) != 2 {
				t.Errorf("deleted %v, want the old holder's and the old waiter's nodes", got)
			}
			if ok, _, _ := s.conn.Exists(own); !ok {
				t.Errorf("the restarted session's own node %s was deleted", own)
			}
			select {
			case r := <-mine:
				t.Fatalf("the restarted contender got past the waiter: %+v", r)
			default:
			}
			if err := s.conn.Delete(own, -1); err != nil {
				t.Fatal(err)
			}
			if err := w.Release(); err != nil {
				t.Fatal(err)
			}
			result(t, mine)
		})
	}
}

// holdAs takes mutex p on s with data.
func holdAs(t *testing.T, s *Session, p, data string) *Lease {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	l, err := NewMutex(s, p, data).Acquire(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Release() })
	return l
}

// TestTakeOverLeavesOthers: another session's node whose data is not the
// earlier incarnation's, and a persistent child with that data, stay.
func TestTakeOverLeavesOthers(t *testing.T) {
	zkc := zktest.Start(t)
	const p = "/takeover/others"
	other := connect(t, zkc.Hosts())
	holdAs(t, other, p, "me, or so it says")
	persistent, err := other.conn.Create(p+"/x__lock__", []byte("me"), zk.FlagSequence, zk.WorldACL(zk.PermAll))
	if err != nil {
		t.Fatal(err)
	}
	defer other.conn.Delete(persistent, -1)
	s, d := restarted(t, zkc.Hosts(), "")
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	if _, err := NewMutex(s, p, "me").Acquire(ctx, false); err == nil {
		t.Fatal("acquired a lock another session holds")
	}
	if got := d.got(); len(got) != 0 {
		t.Errorf("deleted %v, want nothing", got)
	}
	if kids, _ := other.children(p); len(kids) != 2 {
		t.Errorf("children %v, want the holder's and the persistent node", kids)
	}
}

// TestTakeOverSemaphore: the earlier incarnation's lease and its node in
// the serialising mutex are deleted; the contender that waited for a lease
// with the turn takes it at once.
func TestTakeOverSemaphore(t *testing.T) {
	zkc := zktest.Start(t)
	const p = "/takeover/sem"
	old, other := connect(t, zkc.Hosts()), connect(t, zkc.Hosts())
	if _, err := old.ensurePath(p, []byte("1")); err != nil {
		t.Fatal(err)
	}
	if _, err := old.ensurePath(p+"-__lock__", nil); err != nil {
		t.Fatal(err)
	}
	oldLease := leftBehind(t, old, p, newPrefix(), false)
	waiter, cancelW := acquireAsync(other, func(ctx context.Context) (*Lease, error) {
		return NewSemaphore(other, p, "other", 1).Acquire(ctx, true)
	})
	defer cancelW()
	waitUntil(t, "the waiter holds the turn", func() bool { n, first := semaphoreQueue(t, old, p, other); return n == 1 && first })
	oldTurn := leftBehind(t, old, p+"-__lock__", newPrefix()+"__lock__", true)

	s, d := restarted(t, zkc.Hosts(), "")
	mine, cancelS := acquireAsync(s, func(ctx context.Context) (*Lease, error) {
		return NewSemaphore(s, p, "me", 1).Acquire(ctx, true)
	})
	defer cancelS()
	w := result(t, waiter)
	waitUntil(t, "the restarted contender queued for the turn", func() bool { return len(ownedBy(t, s, p+"-__lock__")) == 1 })
	if !gone(t, old, oldLease) || !gone(t, old, oldTurn) {
		t.Errorf("the old incarnation's nodes %s, %s are still there", oldLease, oldTurn)
	}
	if got := d.got(); len(got) != 2 {
		t.Errorf("deleted %v, want the old lease and the old turn node", got)
	}
	if err := w.Release(); err != nil {
		t.Fatal(err)
	}
	result(t, mine)
}

// TestTakeOverRaces: between the look at a node and its deletion, the dead
// incarnation's session expires (the node is gone: fine, nothing to
// report), or the node is written (a live session's, whatever its data
// says: left alone). EarlierSelf runs in between, so it makes each happen.
func TestTakeOverRaces(t *testing.T) {
	zkc := zktest.Start(t)
	for _, tc := range []struct {
		name    string
		meddle  func(old *Session, node string) error
		remains bool
	}{
		{"session expired meanwhile", func(old *Session, node string) error { old.Close(); return nil }, false},
		{"written meanwhile", func(old *Session, node string) error {
			_, err := old.conn.Set(old.abs(node), []byte("me"), -1)
			return err
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := "/takeover/race-" + strings.ReplaceAll(tc.name, " ", "-")
			old := connect(t, zkc.Hosts())
			if _, err := old.ensurePath(p, nil); err != nil {
				t.Fatal(err)
			}
			node := leftBehind(t, old, p, newPrefix()+"__lock__", true)
			d := &deletions{}
			var looked atomic.Int32
			s := connectWith(t, zkc.Hosts(), func(o *Options) {
				o.Observer = d
				o.EarlierSelf = func(data []byte) bool {
					looked.Add(1)
					if err := tc.meddle(old, node); err != nil {
						t.Error(err)
					}
					return string(data) == "me"
				}
			})
			ctx, cancel := context.WithTimeout(context.Background(), patience)
			defer cancel()
			lease, err := NewMutex(s, p, "me").Acquire(ctx, false)
			switch {
			case tc.remains && !errors.Is(err, ErrBusy):
				t.Errorf("Acquire: %v, want ErrBusy: the written node holds", err)
			case !tc.remains && err != nil:
				t.Errorf("Acquire: %v, want the lock: the node went with its session", err)
			case err == nil:
				lease.Release()
			}
			if looked.Load() != 1 || len(d.got()) != 0 {
				t.Errorf("looked %d times, reported deleted %v; want one look, nothing deleted by the takeover", looked.Load(), d.got())
			}
			if tc.remains == gone(t, s, node) {
				t.Errorf("%s gone: %t, want %t", node, !tc.remains, tc.remains)
			}
		})
	}
}
