package e2e

import (
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"
	"github.com/lockex/lockex/internal/zktest"
)

// TestIsolatedFollower (fault matrix row 10): the holder is connected only
// to a follower, which is cut off from the leader. The follower goes on
// answering its clients by itself for syncLimit ticks (5 × 2s here), while
// the leader, hearing nothing of the session, expires it after 4 to 6s and
// lets a contender connected to the leader take the lock. The holder must
// count only what proves that the leader saw its session: its workload
// stops before the contender's starts, and lockex exits 76.
func TestIsolatedFollower(t *testing.T) {
	ens := zktest.StartEnsemble(t, 3, zktest.TickTime(2*time.Second), zktest.Partitions())
	leader, followers := roles(t, ens)
	follower := followers[0]
	conn := zkClient(t, leader.Addr())
	logPath := filepath.Join(t.TempDir(), "log")
	a := startLockex(t, nil, lossArgs(follower.Addr(), "isolated", ticker(logPath, "a", 0, false))...)
	waitRecord(t, logPath, "a")
	b := startLockex(t, nil, lossArgs(leader.Addr(), "isolated", ticker(logPath, "b", 300*time.Millisecond, false))...)
	eventually(t, 10*time.Second, "b waits", func() bool { return len(children(t, conn, "/lockex/isolated")) == 2 })
	// Long enough for the holder's evidence to come from its syncs, not
	// from its connect answer alone.
	time.Sleep(3 * time.Second)

	cut, err := ens.Cut([]*zktest.Server{follower}, []*zktest.Server{leader})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cut.Heal() })
	cutAt := time.Now()
	if code := a.wait(t, 30*time.Second); code != 76 {
		t.Fatalf("holder exit %d, want 76; log:\n%s", code, a.stderr)
	}
	t.Logf("holder exited 76 %s after the cut", time.Since(cutAt).Round(time.Millisecond))
	if code := b.wait(t, 30*time.Second); code != 0 {
		t.Fatalf("contender exit %d; log:\n%s", code, b.stderr)
	}
	oneAfterTheOther(t, logPath, cutAt, "the cut")
	if !strings.Contains(a.stderr.String(), "no answer from zookeeper for too long") {
		t.Errorf("no reason in the log:\n%s", a.stderr)
	}
}

// roles is ens's leader, and its followers, as they are now.
func roles(t *testing.T, ens *zktest.Cluster) (leader *zktest.Server, followers []*zktest.Server) {
	t.Helper()
	leader, err := ens.Leader()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range ens.Servers {
		if s != leader {
			followers = append(followers, s)
		}
	}
	return leader, followers
}

// oneAfterTheOther checks that a's and b's runs in logPath, and only
// theirs, never overlapped, and logs when each ran, relative to the fault
// at t0.
func oneAfterTheOther(t *testing.T, logPath string, t0 time.Time, fault string) {
	t.Helper()
	for _, r := range readRuns(t, logPath) {
		t.Logf("%s: first %s, last %s after %s", r.who,
			time.Duration(r.first-t0.UnixNano()).Round(time.Millisecond), time.Duration(r.last-t0.UnixNano()).Round(time.Millisecond), fault)
	}
	if v := mustBeOneAtATime(t, logPath); v.runs != 2 {
		t.Errorf("%d runs, want a's and b's", v.runs)
	}
}

// TestFrozenServer (fault matrix row 11): with the default session timeout
// and kill grace, the server the holder is connected to, a follower and
// then the leader, freezes (SIGSTOP) for 15s while the other two serve
// (after an election, for the leader). The holder moves to another server
// with the same session in time: its workload keeps running, and a
// contender's never starts.
func TestFrozenServer(t *testing.T) {
	ens := zktest.StartEnsemble(t, 3, zktest.SessionTimeouts(400*time.Millisecond, 20*time.Second))
	conn := zkClient(t, ens.Hosts())
	for _, role := range []string{"follower", "leader"} {
		t.Run(role, func(t *testing.T) { frozenServer(t, ens, conn, role) })
	}
}

func frozenServer(t *testing.T, ens *zktest.Cluster, conn *zk.Conn, role string) {
	id := "frozen-" + role
	logPath := filepath.Join(t.TempDir(), "log")
	// The defaults: a 10s session, a 3s kill grace.
	args := func(who string, hold time.Duration) []string {
		return append([]string{"-z", ens.Hosts(), "-i", id, "--"}, ticker(logPath, who, hold, false)...)
	}
	// lockex picks its server at random: start holders until one is on a
	// server in role.
	var (
		a      *started
		frozen *zktest.Server
		node   string
		owner  int64
	)
	for attempt := 1; ; attempt++ {
		who := fmt.Sprintf("a%d", attempt)
		a = startLockex(t, nil, args(who, 0)...)
		waitRecord(t, logPath, who)
		node, owner = holderNode(t, conn, "/lockex/"+id)
		frozen = serverOf(t, ens, owner)
		if mode, _ := frozen.Mode(); mode == role {
			break
		}
		if attempt == 10 {
			t.Fatalf("no holder on a %s in %d attempts", role, attempt)
		}
		_ = a.cmd.Process.Signal(syscall.SIGTERM)
		a.wait(t, 10*time.Second)
	}
	b := startLockex(t, nil, args("b", 100*time.Millisecond)...)
	eventually(t, 10*time.Second, "b waits", func() bool { return len(children(t, conn, "/lockex/"+id)) == 2 })
	// Long enough for the holder's evidence to come from its syncs.
	time.Sleep(2 * time.Second)

	if err := frozen.Pause(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { frozen.Resume() })
	frozenAt := time.Now()
	t.Logf("froze server %d (%s), the holder's", frozen.ID(), role)
	select {
	case <-a.done:
		t.Fatalf("holder exited %d %s after its server froze; log:\n%s", a.code, time.Since(frozenAt).Round(time.Millisecond), a.stderr)
	case <-time.After(15 * time.Second):
	}
	var others []string
	for _, s := range ens.Servers {
		if s != frozen {
			others = append(others, s.Addr())
		}
	}
	check := zkClient(t, strings.Join(others, ","))
	if ok, stat, err := check.Exists(node); err != nil || !ok || stat.EphemeralOwner != owner {
		t.Errorf("after 15s: node %s exists %v (%v), want it owned by the same session %#x", node, ok, err, owner)
	}
	t.Logf("the holder is on server %d now", serverOf(t, ens, owner).ID())
	for _, r := range readRuns(t, logPath) {
		if r.who == "b" {
			t.Errorf("b's workload started while a held the lock")
		}
	}
	if err := frozen.Resume(); err != nil {
		t.Fatal(err)
	}
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	if code := a.wait(t, 15*time.Second); code != 143 {
		t.Errorf("holder exit %d after SIGTERM, want 143; log:\n%s", code, a.stderr)
	}
	if code := b.wait(t, 30*time.Second); code != 0 {
		t.Errorf("contender exit %d; log:\n%s", code, b.stderr)
	}
	mustBeOneAtATime(t, logPath)
	if strings.Contains(a.stderr.String(), "lock lost") {
		t.Errorf("a spurious loss:\n%s", a.stderr)
	}
	if err := ens.WaitServing(30 * time.Second); err != nil {
		t.Fatal(err)
	}
}

// holderNode returns the holder's node under a lock's dir (the lowest
// sequence) and the session that owns it.
func holderNode(t *testing.T, conn *zk.Conn, dir string) (string, int64) {
	t.Helper()
	kids := children(t, conn, dir)
	if len(kids) == 0 {
		t.Fatalf("no contenders under %s", dir)
	}
	seq := func(name string) string { return name[strings.LastIndex(name, "__")+2:] }
	sort.Slice(kids, func(i, j int) bool { return seq(kids[i]) < seq(kids[j]) })
	node := dir + "/" + kids[0]
	ok, stat, err := conn.Exists(node)
	if err != nil || !ok {
		t.Fatalf("holder's node %s: exists %v, %v", node, ok, err)
	}
	return node, stat.EphemeralOwner
}

// serverOf returns the member that has a connection of session sid, as its
// cons four-letter word lists them.
func serverOf(t *testing.T, ens *zktest.Cluster, sid int64) *zktest.Server {
	t.Helper()
	want := fmt.Sprintf("sid=0x%x,", sid)
	var found *zktest.Server
	eventually(t, 10*time.Second, "the server with session "+want, func() bool {
		for _, s := range ens.Servers {
			if out, err := zktest.FourLetter(s.Addr(), "cons"); err == nil && strings.Contains(out, want) {
				found = s
				return true
			}
		}
		return false
	})
	return found
}
