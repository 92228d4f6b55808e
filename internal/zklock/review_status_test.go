package zklock

import (
	"context"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/lockex/lockex/internal/zktest"
)

// TestInspectBeforeTurn: /status reads the lock through the instance's
// own session (app's readLock), one request per contender. A standby with
// more contenders queued than the wire layer keeps answers for (maxNoted)
// is read just before its turn comes, its evidence as old as a standby's:
// the first beat must still renew the evidence from the answers before
// the read, and the lease must not come back lost. ZooKeeper's default
// tickTime makes m a second, as in production.
func TestInspectBeforeTurn(t *testing.T) {
	zkc := zktest.Start(t, zktest.TickTime(2*time.Second))
	h, look := connect(t, zkc.Hosts()), connect(t, zkc.Hosts())
	w := connectWith(t, zkc.Hosts(), func(o *Options) { o.StopGrace = time.Second })
	holder := hold(t, h, "/crowd")
	got := waitBehind(t, w, look, "/crowd")

	// Queued behind the waiter, in batches: one create each would take
	// longer than the test needs to.
	const more = maxNoted + 100
	prefix := look.abs("/crowd/" + newPrefix() + "__lock__")
	for queued := 0; queued < more; {
		var ops []any
		for ; len(ops) < 100 && queued < more; queued++ {
			ops = append(ops, &zk.CreateRequest{Path: prefix, Acl: look.acl, Flags: zk.FlagEphemeral | zk.FlagSequence})
		}
		if _, err := look.conn.Multi(ops...); err != nil {
			t.Fatal(err)
		}
	}
	evidenceOlderThan(t, w, budget(w)) // a standby that waited: only its first beat can renew it

	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	began := time.Now()
	c, err := w.Inspect(ctx, "/crowd")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("read %d waiters through the waiter's session in %s; m is %s", len(c.Waiting), time.Since(began).Round(time.Millisecond), w.live.margin())
	if len(c.Waiting) != more+1 {
		t.Fatalf("%d waiting, want %d", len(c.Waiting), more+1)
	}
	if err := holder.Release(); err != nil {
		t.Fatal(err)
	}
	l := result(t, got)
	if l.Err() != nil {
		t.Fatalf("a read of the lock just before the turn cost the lease: %v", l.Err())
	}
}
