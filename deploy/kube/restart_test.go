package kube

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"path"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"
	"github.com/lockex/lockex/internal/zktest"
)

// restartSession is the session timeout of the crash-restart scenario:
// long, so that a takeover that waited for the dead session to expire
// cannot pass for one that did not, whatever the load.
const restartSession = 20 * time.Second

// restartRounds is how many holders the scenario kills in turn.
const restartRounds = 10

const takeoverLine = "deleted the node of this container's earlier incarnation"

// TestCrashRestart: kill -9 of the holder's lockex, its container's PID 1,
// as the OOM killer or a crash would end it. podman restarts the container
// in the same pod (restartPolicy Always; the pod's UID, podman's pod ID,
// stays), and the restarted lockex, with the chart's pod UID and container
// name, deletes its dead incarnation's node: the standby's workload starts
// while the dead session still lives, never before the killed workload
// ended. With digest auth: the restarted lockex deletes with the same
// credentials. Round after round, each holder is killed in turn.
func TestCrashRestart(t *testing.T) {
	s := newScenario(t, "restart", scene{workload: nonroot, lockex: dockerfileImage,
		zk: []zktest.Option{zktest.SessionTimeouts(400*time.Millisecond, restartSession)}})
	password := randomPassword()
	s.rel.secrets["zk-auth"] = map[string]string{"zk-user": "kit", "zk-password": password}
	withDigestAuth(s.rel.values)
	s.rel.values["lock"].(map[string]any)["sessionTimeout"] = restartSession.String()
	holder, standby := s.handover()

	conn := connect(t, s.zk.Hosts())
	if err := conn.AddAuth("digest", []byte("kit:"+password)); err != nil {
		t.Fatal(err)
	}
	lock := "/" + path.Join("lockex", namespace, s.rel.name+"-lockex")
	restarts := map[*pod]int{}
	var takeovers []time.Duration
	// Per pod, when each of its holders was killed and its standby's
	// workload started, in order: paired with the restarted lockex's log
	// lines at the end.
	kills, starts := map[*pod][]time.Time{}, map[*pod][]time.Time{}
	for round := range restartRounds {
		old := nodeOf(t, conn, lock, holder)
		killed := time.Now()
		pid, _ := strconv.Atoi(strings.TrimSpace(string(run(t, "podman", "container", "inspect", "--format", "{{.State.Pid}}", holder.appContainer()))))
		if pid <= 1 {
			t.Fatalf("round %d: container %s has no process (pid %d)", round, holder.appContainer(), pid)
		}
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		s.w.wait(t, fmt.Sprintf("round %d: the standby's workload", round), startTimeout, func(ids []string) bool {
			return len(ids) == 1 && s.pod(ids[0]) == standby
		}, nil)
		alive := sessionAlive(t, s.zk, old.owner)
		started, _ := s.w.times(standby.name)
		_, ended := s.w.times(holder.name)
		if ended.IsZero() || started.Before(ended) {
			t.Fatalf("round %d: the standby's workload started before the killed holder's ended\n%s", round, s.w.log())
		}
		if !alive {
			t.Errorf("round %d: the standby took over only after the dead session %#x expired", round, old.owner)
		}
		takeovers = append(takeovers, started.Sub(killed))
		kills[holder], starts[holder] = append(kills[holder], killed), append(starts[holder], started)
		t.Logf("round %d: kill -9 of %s's lockex at %s; its workload ended %v later, %s's started %v after the kill (session timeout %v; dead session alive then: %t)",
			round, holder.name, killed.Format("15:04:05.000"), ended.Sub(killed), standby.name, started.Sub(killed), restartSession, alive)

		// The restarted container queues behind the new holder, which is
		// the next round's to kill.
		restarts[holder]++
		waitRestarted(t, holder, restarts[holder])
		waitQueued(t, conn, lock, 2)
		if _, most := s.w.now(); most != 1 {
			t.Fatalf("%d workloads ran at once\n%s", most, s.w.log())
		}
		holder, standby = standby, holder
	}
	var restarting, handing []time.Duration
	for _, p := range []*pod{holder, standby} {
		// lockex logs to stderr, which podman logs gives back on its own.
		out, err := exec.Command("podman", "logs", p.appContainer()).CombinedOutput()
		if err != nil {
			t.Fatalf("podman logs %s: %v\n%s", p.appContainer(), err, out)
		}
		deleted := takeoverTimes(string(out))
		if len(deleted) != restarts[p] {
			t.Errorf("%s: %d lines %q, want one per restart (%d)\n%s", p.name, len(deleted), takeoverLine, restarts[p], out)
			continue
		}
		for i, at := range deleted {
			restarting = append(restarting, at.Sub(kills[p][i]))
			handing = append(handing, starts[p][i].Sub(at))
		}
	}
	t.Logf("over %d restarts with podman (session timeout %v): kill -9 → the standby's workload started %s; of which kill → the restarted lockex deleted the dead node (podman's restart, lockex's start and connect) %s, and deleted → started %s",
		len(takeovers), restartSession, spread(takeovers), spread(restarting), spread(handing))
}

// takeoverTimes are the times of lockex's JSON log lines that report a
// dead incarnation's node deleted, in order.
func takeoverTimes(logs string) []time.Time {
	var at []time.Time
	for _, line := range strings.Split(logs, "\n") {
		var rec struct {
			Time time.Time
			Msg  string
		}
		if json.Unmarshal([]byte(line), &rec) == nil && strings.HasPrefix(rec.Msg, takeoverLine) {
			at = append(at, rec.Time)
		}
	}
	return at
}

// spread is the median, min and max of ds.
func spread(ds []time.Duration) string {
	if len(ds) == 0 {
		return "none"
	}
	ds = slices.Sorted(slices.Values(ds))
	return fmt.Sprintf("median %v (min %v, max %v, n %d)", ds[len(ds)/2].Round(time.Millisecond), ds[0].Round(time.Millisecond), ds[len(ds)-1].Round(time.Millisecond), len(ds))
}

// lockNode is a node of the lock, with its data and owner.
type lockNode struct {
	path, data string
	owner      int64
}

// nodeOf returns the lock's node of pod p's lockex: its data names the pod
// and, as PID 1, pid 1.
func nodeOf(t *testing.T, conn *zk.Conn, lock string, p *pod) lockNode {
	t.Helper()
	kids, _, err := conn.Children(lock)
	if err != nil {
		t.Fatalf("children %s: %v", lock, err)
	}
	var found []lockNode
	for _, kid := range kids {
		data, stat, err := conn.Get(lock + "/" + kid)
		if err != nil {
			t.Fatalf("get %s/%s: %v", lock, kid, err)
		}
		if strings.Contains(string(data), " pod="+namespace+"/"+p.name+" ") {
			found = append(found, lockNode{lock + "/" + kid, string(data), stat.EphemeralOwner})
		}
	}
	// Words after container= (ip=, a holder's since=) may follow.
	if len(found) != 1 || !strings.Contains(found[0].data, ":1 lockex/") || !strings.Contains(found[0].data+" ", " container=app ") ||
		!strings.Contains(found[0].data+" ", " ip=127.0.0.1 ") {
		t.Fatalf("%s's nodes under %s: %+v, want one written by lockex as PID 1 with its pod, container and IP", p.name, lock, found)
	}
	return found[0]
}

// sessionAlive reports whether the server still tracks session id, from
// its four-letter dump of sessions and their expiry.
func sessionAlive(t *testing.T, zkc *zktest.Cluster, id int64) bool {
	t.Helper()
	out, err := zktest.FourLetter(zkc.Servers[0].Addr(), "dump")
	if err != nil {
		t.Fatalf("dump: %v", err)
	}
	return strings.Contains(out, fmt.Sprintf("\t0x%x\n", uint64(id)))
}

// waitRestarted waits until podman has restarted p's workload container n
// times in all and it runs.
func waitRestarted(t *testing.T, p *pod, n int) {
	t.Helper()
	deadline := time.Now().Add(startTimeout)
	for {
		st := p.state(t)
		if st.RestartCount == n && st.Status == "running" {
			return
		}
		if st.RestartCount > n || time.Now().After(deadline) {
			t.Fatalf("%s: container %s restarted %d times, now %s; want %d restarts and running", p.name, p.appContainer(), st.RestartCount, st.Status, n)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitQueued waits until the lock has n nodes.
func waitQueued(t *testing.T, conn *zk.Conn, lock string, n int) {
	t.Helper()
	deadline := time.Now().Add(startTimeout)
	for {
		kids, _, err := conn.Children(lock)
		if err == nil && len(kids) == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s has children %q (%v), want %d", lock, kids, err, n)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
