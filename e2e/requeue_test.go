package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/lockex/lockex/internal/zktest"
)

// countIn counts the log lines of s that contain msg.
func countIn(s *started, msg string) int { return strings.Count(s.stderr.String(), msg) }

// TestRequeueTakeover: with --requeue a holder releases when its workload
// ends, so the lockex queued behind it takes over, and it comes back once
// that one is done: runs a, b, a, never two at once, tokens growing. A
// TERM during the backoff ends the loop (143) and leaves no node.
func TestRequeueTakeover(t *testing.T) {
	zk := startZK(t)
	conn := zkClient(t, zk.Hosts())
	const id = "requeue"
	logPath := filepath.Join(t.TempDir(), "holders.log")
	a := startLockex(t, nil, append([]string{"-z", zk.Hosts(), "-i", id, "--requeue", "--requeue-backoff", "1s", "--requeue-backoff-max", "5s", "--"},
		recorder(logPath, "a", time.Second)...)...)
	waitRecord(t, logPath, "a")
	b := startLockex(t, nil, append([]string{"-z", zk.Hosts(), "-i", id, "--"}, recorder(logPath, "b", time.Second)...)...)
	if code := b.wait(t, 30*time.Second); code != 0 {
		t.Fatalf("b: exit %d, want 0; log:\n%s", code, b.stderr)
	}
	// a's second round, and the 2s backoff after it (doubled: short rounds).
	eventually(t, 30*time.Second, "a's second round ended", func() bool { return countIn(a, "backoff=2s round=3") == 1 })
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	if code := a.wait(t, 10*time.Second); code != 143 {
		t.Fatalf("a: exit %d, want 143; log:\n%s", code, a.stderr)
	}
	if n := countIn(a, "stopped between rounds"); n != 1 {
		t.Errorf("a: %d lines say it was stopped between rounds, want 1:\n%s", n, a.stderr)
	}
	ivs := readIntervals(t, logPath)
	var who []string
	for _, iv := range ivs {
		who = append(who, iv.who)
	}
	if strings.Join(who, " ") != "a b a" {
		t.Errorf("runs %v, want a b a", who)
	}
	if n := maxOverlap(ivs); n != 1 {
		t.Errorf("%d runs at once: %+v", n, ivs)
	}
	for i := 1; i < len(ivs); i++ {
		if ivs[i].token <= ivs[i-1].token {
			t.Errorf("fencing token %d after %d", ivs[i].token, ivs[i-1].token)
		}
	}
	if kids := children(t, conn, "/lockex/"+id); len(kids) != 0 {
		t.Errorf("nodes left: %v", kids)
	}
}

// TestRequeueStopWhileRunning: a TERM while the workload runs is passed
// on, and lockex exits with the workload's code: no round follows. A USR1
// is the workload's business: the loop goes on.
func TestRequeueStopWhileRunning(t *testing.T) {
	zk := startZK(t)
	conn := zkClient(t, zk.Hosts())
	const id = "requeue-stop"
	marks := filepath.Join(t.TempDir(), "marks")
	// The workload notes each USR1 and each start, and ends on USR1.
	script := `echo start >> ` + marks + `; trap 'echo usr1 >> ` + marks + `; exit 3' USR1; sleep 60 & wait`
	a := startLockex(t, nil, "-z", zk.Hosts(), "-i", id, "--requeue", "--requeue-backoff", "0.1", "--", "sh", "-c", script)
	starts := func() int { b, _ := os.ReadFile(marks); return strings.Count(string(b), "start") }
	eventually(t, 10*time.Second, "the workload runs", func() bool { return starts() == 1 })
	_ = a.cmd.Process.Signal(syscall.SIGUSR1)
	eventually(t, 10*time.Second, "the workload runs again", func() bool { return starts() == 2 })
	if !strings.Contains(a.stderr.String(), "lock released") || !strings.Contains(a.stderr.String(), "code=3") {
		t.Errorf("the first round did not end with the workload's 3:\n%s", a.stderr)
	}
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	if code := a.wait(t, 10*time.Second); code != 143 {
		t.Fatalf("exit %d, want 143; log:\n%s", code, a.stderr)
	}
	if n := countIn(a, "contending again after the backoff"); n != 1 {
		t.Errorf("%d backoffs, want the one after the USR1's round:\n%s", n, a.stderr)
	}
	if kids := children(t, conn, "/lockex/"+id); len(kids) != 0 {
		t.Errorf("nodes left: %v", kids)
	}
}

// TestRequeueAfterLoss: a lock lost while the workload runs (its node
// deleted) stops the workload, ends the round (76) and its session, and
// the next round runs it again under a new session. Between rounds the
// probes and metrics say so.
func TestRequeueAfterLoss(t *testing.T) {
	zk := startZK(t)
	conn := zkClient(t, zk.Hosts())
	const id = "requeue-loss"
	const lock = "/lockex/" + id
	a := startObserved(t, nil, "-z", zk.Hosts(), "-i", id, "--requeue", "--requeue-backoff", "5s", "--requeue-backoff-max", "5s", "--", "sleep", "60")
	eventually(t, 10*time.Second, "a runs", func() bool { code, _ := a.get(t, "/active"); return code == 200 })
	kids := children(t, conn, lock)
	if len(kids) != 1 {
		t.Fatalf("nodes %v, want a's", kids)
	}
	_, first, err := conn.Get(lock + "/" + kids[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := conn.Delete(lock+"/"+kids[0], -1); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "a backs off", func() bool { return countIn(a.started, "contending again after the backoff") == 1 })
	// The backoff is 5s: what follows happens within it. The lost round's
	// session was closed with it: not ready until the next round's.
	a.probes(t, 200, 503, 503)
	if _, body := a.get(t, "/healthz"); !strings.Contains(body, "contending again after 5s (round 2)") {
		t.Errorf("/healthz says %q", body)
	}
	check(t, a.metrics(t), lock, map[string]want{
		"lockex_lock_held": gauge(0), "lockex_workload_running": gauge(0), "lockex_zk_connected": gauge(0),
		"lockex_lock_lost_total": lost("node_deleted", 1), "lockex_lock_requeues_total": counter(0),
	})
	eventually(t, 20*time.Second, "a runs again", func() bool { code, _ := a.get(t, "/active"); return code == 200 })
	check(t, a.metrics(t), lock, map[string]want{
		"lockex_lock_held": gauge(1), "lockex_lock_requeues_total": counter(1), "lockex_lock_lost_total": lost("node_deleted", 1),
		"lockex_lock_wait_seconds": {typ: dto.MetricType_HISTOGRAM, value: 2},
	})
	kids = children(t, conn, lock)
	if len(kids) != 1 {
		t.Fatalf("nodes %v, want a's new one", kids)
	}
	_, second, err := conn.Get(lock + "/" + kids[0])
	if err != nil {
		t.Fatal(err)
	}
	if second.EphemeralOwner == first.EphemeralOwner {
		t.Errorf("the second round's node is in the first round's session %#x", first.EphemeralOwner)
	}
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	if code := a.wait(t, 10*time.Second); code != 143 {
		t.Fatalf("exit %d, want 143; log:\n%s", code, a.stderr)
	}
	if strings.Contains(a.stderr.String(), "serving /metrics until the next scrape") {
		t.Errorf("lingered for a scrape of an earlier round's loss:\n%s", a.stderr)
	}
	checkLog(t, a.started, lock, map[string][]string{
		"lock lost; stopping the workload":   {"reason"},
		"contending again after the backoff": {"backoff", "round"},
		"lock released":                      {"code"},
	})
	if kids := children(t, conn, lock); len(kids) != 0 {
		t.Errorf("nodes left: %v", kids)
	}
}

// TestRequeueNoBlocking: with --no-blocking each round looks once; a round
// that finds the lock taken backs off and looks again, until the holder
// is gone.
func TestRequeueNoBlocking(t *testing.T) {
	zk := startZK(t)
	conn := zkClient(t, zk.Hosts())
	const id = "requeue-look"
	marks := filepath.Join(t.TempDir(), "marks")
	h := startLockex(t, nil, "-z", zk.Hosts(), "-i", id, "--", "sleep", "60")
	eventually(t, 10*time.Second, "h holds the lock", func() bool { return len(children(t, conn, "/lockex/"+id)) == 1 })
	// The workload keeps the lock once it has it: an INT then ends it
	// and lockex alike, 130 either way.
	a := startLockex(t, nil, "-z", zk.Hosts(), "-i", id, "--requeue", "--no-blocking", "--requeue-backoff", "0.1", "--requeue-backoff-max", "0.4",
		"--", "sh", "-c", "echo ran >> "+marks+"; exec sleep 60")
	eventually(t, 20*time.Second, "a looked three times", func() bool { return countIn(a, "lock not acquired") >= 3 })
	if _, err := os.Stat(marks); err == nil {
		t.Fatal("a ran while h held the lock")
	}
	_ = h.cmd.Process.Signal(syscall.SIGTERM)
	h.wait(t, 10*time.Second)
	eventually(t, 20*time.Second, "a runs", func() bool { b, _ := os.ReadFile(marks); return len(b) > 0 })
	_ = a.cmd.Process.Signal(syscall.SIGINT)
	if code := a.wait(t, 10*time.Second); code != 130 {
		t.Fatalf("exit %d, want 130; log:\n%s", code, a.stderr)
	}
	if kids := children(t, conn, "/lockex/"+id); len(kids) != 0 {
		t.Errorf("nodes left: %v", kids)
	}
}

// TestRequeueLeaksNothing: a daemon that is restarted round after round
// keeps its goroutines and descriptors: each round's session, workload
// and waits are gone with it.
func TestRequeueLeaksNothing(t *testing.T) {
	zk := startZK(t)
	a := startObserved(t, nil, "-z", zk.Hosts(), "-i", "requeue-leak", "--requeue", "--requeue-backoff", "10ms", "--requeue-backoff-max", "10ms", "--", "true")
	value := func(families map[string]*dto.MetricFamily, name string) float64 {
		f := families[name]
		if f == nil || len(f.Metric) != 1 {
			t.Fatalf("%s: %v", name, f)
		}
		if f.GetType() == dto.MetricType_COUNTER {
			return f.Metric[0].GetCounter().GetValue()
		}
		return f.Metric[0].GetGauge().GetValue()
	}
	// Resources after round n, looked at while the round's workload has
	// not started yet or is over: what a round leaves behind shows.
	after := func(n float64) (goroutines, fds float64) {
		var fam map[string]*dto.MetricFamily
		eventually(t, 60*time.Second, "rounds pass", func() bool {
			fam = a.metrics(t)
			return value(fam, "lockex_lock_requeues_total") >= n
		})
		return value(fam, "go_goroutines"), value(fam, "process_open_fds")
	}
	g1, f1 := after(20)
	g2, f2 := after(120)
	t.Logf("after 20 rounds: %v goroutines, %v fds; after 120: %v, %v", g1, f1, g2, f2)
	// A session costs several goroutines and a socket; a workload a pidfd.
	if g2 > g1+10 || f2 > f1+5 {
		t.Errorf("100 rounds later %v goroutines (was %v), %v descriptors (was %v)", g2, g1, f2, f1)
	}
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	if code := a.wait(t, 10*time.Second); code != 143 && code != 0 {
		t.Fatalf("exit %d, want 143 (between rounds) or 0 (the workload's, TERM while it ran); log:\n%s", code, a.stderr)
	}
}

// TestRequeueSemaphore: three lockex with --requeue share a semaphore of
// 2, round after round: never more than two run at once, each gets its
// turns, and TERM leaves no lease and no turn node behind.
func TestRequeueSemaphore(t *testing.T) {
	zk := startZK(t)
	conn := zkClient(t, zk.Hosts())
	const id = "requeue-sem"
	logPath := filepath.Join(t.TempDir(), "holders.log")
	var all []*started
	for _, who := range []string{"a", "b", "c"} {
		all = append(all, startLockex(t, nil, append([]string{"-z", zk.Hosts(), "-i", id, "-c", "2", "--requeue",
			"--requeue-backoff", "0.1", "--requeue-backoff-max", "0.2", "--"}, stoppableRecorder(logPath, who, 300*time.Millisecond)...)...))
	}
	eventually(t, 60*time.Second, "each ran three rounds", func() bool {
		b, _ := os.ReadFile(logPath)
		for _, who := range []string{"a", "b", "c"} {
			if strings.Count(string(b), " "+who+" ")/2 < 3 {
				return false
			}
		}
		return true
	})
	for _, s := range all {
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
	}
	for i, s := range all {
		// 143 between rounds or while waiting, 0 from the trap while it ran.
		if code := s.wait(t, 10*time.Second); code != 143 && code != 0 {
			t.Errorf("lockex %d: exit %d, want 143 or 0; log:\n%s", i, code, s.stderr)
		}
	}
	ivs := readIntervals(t, logPath)
	if n := maxOverlap(ivs); n > 2 {
		t.Errorf("%d runs at once under a semaphore of 2", n)
	}
	for _, p := range []string{"/lockex/" + id, "/lockex/" + id + "-__lock__"} {
		if kids := children(t, conn, p); len(kids) != 0 {
			t.Errorf("%s: nodes left: %v", p, kids)
		}
	}
}

// TestRequeueZooKeeperOutage: once lockex has had a session, rounds that
// cannot reach ZooKeeper back off and try again; when it is back, the
// workload runs again. Only the first session must come at once (69).
func TestRequeueZooKeeperOutage(t *testing.T) {
	zk := startZK(t)
	conn := zkClient(t, zk.Hosts())
	proxy := zktest.StartProxy(t, zk.Servers[0].Addr())
	const id = "requeue-outage"
	marks := filepath.Join(t.TempDir(), "marks")
	runs := func() int { b, _ := os.ReadFile(marks); return strings.Count(string(b), "ran") }
	a := startLockex(t, nil, "-z", proxy.Addr(), "-i", id, "-T", "1", "--requeue", "--requeue-backoff", "0.2", "--requeue-backoff-max", "1",
		"--", "sh", "-c", "echo ran >> "+marks)
	eventually(t, 10*time.Second, "a ran", func() bool { return runs() >= 1 })
	proxy.Cut()
	cut := countIn(a, "lock not acquired")
	eventually(t, 30*time.Second, "two rounds could not reach zookeeper", func() bool { return countIn(a, "lock not acquired") >= cut+2 })
	before := runs()
	proxy.Pass()
	eventually(t, 40*time.Second, "a runs again", func() bool { return runs() > before })
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	if code := a.wait(t, 10*time.Second); code != 143 && code != 0 {
		t.Fatalf("exit %d, want 143 (between rounds) or 0 (the workload's); log:\n%s", code, a.stderr)
	}
	if !strings.Contains(a.stderr.String(), "zookeeper unreachable") {
		t.Errorf("the failed rounds do not say why:\n%s", a.stderr)
	}
	// A session the cut kept from closing expires on the server.
	eventually(t, 20*time.Second, "no node left", func() bool { return len(children(t, conn, "/lockex/"+id)) == 0 })

	// The first session, though, must come at once.
	proxy.Cut()
	r := lockex(t, nil, "-z", proxy.Addr(), "-i", id, "-T", "1", "--requeue", "--", "true")
	if r.code != 69 {
		t.Fatalf("no first session: exit %d, want 69; log:\n%s", r.code, r.stderr)
	}
}

// TestRequeueCtrlC: on a terminal Ctrl-C reaches the workload in the
// foreground, not lockex; a workload it ends ends the loop too, as a
// shell's loop ends, and the shell gets the terminal back.
func TestRequeueCtrlC(t *testing.T) {
	zk := startZK(t)
	conn := zkClient(t, zk.Hosts())
	script := fmt.Sprintf(`%s -z %s -i tty-requeue --requeue --requeue-backoff 0.1 -- sh -c 'echo round; exec sleep 1000'
echo "exit:$?"`, lockexBin, zk.Hosts())
	term, s := startOnTerminal(t, nil, "sh", "-c", script)
	term.expect(t, "round")
	term.waitForeground(t, "sleep")
	term.typ(t, "\x03")
	term.expect(t, "exit:130")
	if code := s.wait(t, 10*time.Second); code != 0 {
		t.Fatalf("shell exit %d; the terminal shows:\n%s", code, term)
	}
	if n := strings.Count(term.String(), "round"); n != 1 {
		t.Errorf("%d rounds, want 1; the terminal shows:\n%s", n, term)
	}
	if kids := children(t, conn, "/lockex/tty-requeue"); len(kids) != 0 {
		t.Errorf("nodes left: %v", kids)
	}
}

// TestRequeueAfterSuspendDeadline: a holder whose writes stop being
// committed (a server cut off from its leader) loses the lock at its
// deadline while its session may live on, with its node. The round ends
// with its session closed, so that node cannot stay queued ahead of
// everyone: the next in line takes over once the writes pass again, never
// while the old holder's workload runs, and the old holder comes back
// after it.
func TestRequeueAfterSuspendDeadline(t *testing.T) {
	zk := startZK(t)
	conn := zkClient(t, zk.Hosts())
	proxy := zktest.StartProxy(t, zk.Servers[0].Addr())
	const id = "requeue-deadline"
	logPath := filepath.Join(t.TempDir(), "holders.log")
	a := startLockex(t, nil, append([]string{"-z", proxy.Addr(), "-i", id, "--session-timeout", "4s", "--kill-grace", "1s",
		"--requeue", "--requeue-backoff", "0.2", "--requeue-backoff-max", "0.2", "--"}, stoppableRecorder(logPath, "a", time.Minute)...)...)
	waitRecord(t, logPath, "a")
	b := startLockex(t, nil, append([]string{"-z", zk.Hosts(), "-i", id, "--"}, stoppableRecorder(logPath, "b", 500*time.Millisecond)...)...)
	eventually(t, 10*time.Second, "b waits", func() bool { return len(children(t, conn, "/lockex/"+id)) == 2 })
	proxy.HoldWrites()
	eventually(t, 20*time.Second, "a lost the lock at its deadline and ended the round", func() bool {
		return strings.Contains(a.stderr.String(), "suspend_deadline") && countIn(a, "contending again after the backoff") >= 1
	})
	proxy.Pass()
	if code := b.wait(t, 30*time.Second); code != 0 {
		t.Fatalf("b: exit %d, want 0; log:\n%s", code, b.stderr)
	}
	eventually(t, 30*time.Second, "a runs again", func() bool {
		bs, _ := os.ReadFile(logPath)
		return strings.Count(string(bs), "start ") == 3
	})
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	if code := a.wait(t, 10*time.Second); code != 0 && code != 143 {
		t.Fatalf("a: exit %d, want 0 (its workload's, from its TERM trap) or 143; log:\n%s", code, a.stderr)
	}
	ivs := readIntervals(t, logPath)
	var who []string
	for _, iv := range ivs {
		who = append(who, iv.who)
	}
	if strings.Join(who, " ") != "a b a" {
		t.Errorf("runs %v, want a b a", who)
	}
	if n := maxOverlap(ivs); n != 1 {
		t.Errorf("%d runs at once: %+v; a's log:\n%s", n, ivs, a.stderr)
	}
	for i := 1; i < len(ivs); i++ {
		if ivs[i].token <= ivs[i-1].token {
			t.Errorf("fencing token %d after %d", ivs[i].token, ivs[i-1].token)
		}
	}
	eventually(t, 20*time.Second, "no node left", func() bool { return len(children(t, conn, "/lockex/"+id)) == 0 })
}
