package zklock

import (
	"context"
	"errors"
	"testing"

	"github.com/go-zookeeper/zk"

	"github.com/lockex/lockex/internal/zktest"
)

// TestReviewWaiterBehindUnreadableNode: the holder's node is one the
// waiter may not read: an operator made the lock path open to all, the
// holder runs with --zk-user a (its node is a's alone), the waiter, of a
// rollout that moved to credentials b, with --zk-user b. ZooKeeper (3.8
// here) sets an exists watch on such a node but never delivers its
// deletion to a watcher without READ, so a waiter that watches with exists
// waits for ever once the holder is gone; a getData is refused at once.
// Whether the waiter reads its predecessor's data (Options.Behind, with
// --active-label) or not, it must not hang: it takes the lock once the
// holder releases, or fails as not authorized.
func TestReviewWaiterBehindUnreadableNode(t *testing.T) {
	for _, behind := range []bool{false, true} {
		name := "exists"
		if behind {
			name = "behind"
		}
		t.Run(name, func(t *testing.T) {
			zkc := zktest.Start(t)
			admin := connect(t, zkc.Hosts())
			for _, p := range []string{"/locks", "/locks/web"} {
				if _, err := admin.conn.Create(p, nil, 0, zk.WorldACL(zk.PermAll)); err != nil {
					t.Fatal(err)
				}
			}
			a := connectWith(t, zkc.Hosts(), func(o *Options) { o.User, o.Password = "a", "secret-a" })
			first, err := NewMutex(a, "/locks/web", "web-0:1 lockex/v1 pod=team-a/web-0").Acquire(context.Background(), true)
			if err != nil {
				t.Fatal(err)
			}
			b := connectWith(t, zkc.Hosts(), func(o *Options) {
				o.User, o.Password = "b", "secret-b"
				if behind {
					o.Behind = func([]byte) {}
				}
			})
			acquired := make(chan error, 1)
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), patience)
				defer cancel()
				lease, err := NewMutex(b, "/locks/web", "web-1:1 lockex/v2 pod=team-a/web-1").Acquire(ctx, true)
				if err == nil {
					err = lease.Release()
				}
				acquired <- err
			}()
			waitUntil(t, "the waiter's node, or its end", func() bool {
				names, err := admin.children("/locks/web")
				return (err == nil && len(names) == 2) || len(acquired) > 0
			})
			if err := first.Release(); err != nil {
				t.Fatal(err)
			}
			if err := <-acquired; err != nil && !errors.Is(err, ErrNotAuthorized) {
				t.Fatalf("the waiter behind a node it may not read: %v; want the lock, or not authorized", err)
			}
		})
	}
}
