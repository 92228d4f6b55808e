package e2e

import (
	"strings"
	"testing"
	"time"
)

// TestReviewLossDuringMinHoldLingers (review): the lock is lost while it
// is kept for --min-hold after the workload exited (its node deleted).
// docs/design.md §4.1: the loss is reported as lost, and
// lockex_lock_lost_total counts it; the exit code stays the workload's.
// lockex lingers after a loss until /metrics is scraped once, else no
// Prometheus ever sees the counter go up: after this loss too, whatever
// the exit code.
func TestReviewLossDuringMinHoldLingers(t *testing.T) {
	zk := startZK(t)
	conn := zkClient(t, zk.Hosts())
	const id = "minhold-loss"
	a := startObserved(t, nil, "-z", zk.Hosts(), "-i", id, "--min-hold", "60s", "--", "true")
	eventually(t, 10*time.Second, "the workload exited; the lock is kept", func() bool {
		return strings.Contains(a.stderr.String(), "workload exited")
	})
	kids := children(t, conn, "/lockex/"+id)
	if len(kids) != 1 {
		t.Fatalf("nodes %v, want the holder's", kids)
	}
	if err := conn.Delete("/lockex/"+id+"/"+kids[0], -1); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the loss is seen", func() bool {
		return strings.Contains(a.stderr.String(), "lock lost")
	})
	select {
	case <-a.done:
		t.Fatalf("exited %d before a scrape saw the loss; log:\n%s", a.code, a.stderr)
	case <-time.After(time.Second):
	}
	check(t, a.metrics(t), "/lockex/"+id, map[string]want{"lockex_lock_lost_total": lost("node_deleted", 1)})
	if code := a.wait(t, 10*time.Second); code != 0 {
		t.Fatalf("exit %d, want the workload's 0; log:\n%s", code, a.stderr)
	}
}
