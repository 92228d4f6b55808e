package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lockex/lockex/internal/zktest"
)

// Adversarial black-box tests of --requeue and --max-runtime (review of
// issue 16, parts 3 and 4).

// markedAlive lists the processes that run (not zombies) with marker in
// their command line.
func markedAlive(marker string) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if strings.Contains(string(b), marker) && alive(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// TestReviewRequeueDaemonGoneBeforeNextRound: each round's workload
// starts a daemon that leaves its session (setsid) and ignores SIGTERM,
// then exits. The daemon must be gone before its round's release: no
// record of it after the next holder (another lockex queued meanwhile, or
// this one's next round) started, and none of them left once lockex exits.
// As PID 1, with --subreaper, and plain (the workload's cgroup, as root).
func TestReviewRequeueDaemonGoneBeforeNextRound(t *testing.T) {
	zk := startZK(t)
	conn := zkClient(t, zk.Hosts())
	for _, m := range append(modes, mode{name: "plain", plain: true}) {
		t.Run(m.name, func(t *testing.T) {
			dir := t.TempDir()
			logPath := filepath.Join(dir, "records")
			id := "review-requeue-daemon-" + m.name
			marker := "review-daemon-" + m.name
			rec := func(kind string) string {
				return `echo "` + kind + ` $(date +%s%N) a $LOCKEX_FENCING_TOKEN" >> ` + logPath
			}
			daemon := `setsid sh -c 'trap "" TERM; while :; do ` + rec("bg") + `; sleep 0.01; done' ` + marker + ` &`
			a := m.start(t, nil, "-z", zk.Hosts(), "-i", id, "--kill-grace", "300ms", "--requeue", "--requeue-backoff", "0.2", "--requeue-backoff-max", "0.4",
				"--", "sh", "-c", daemon+"\n"+rec("start")+"; sleep 0.3")
			waitRecord(t, logPath, "a")
			b := startLockex(t, nil, append([]string{"-z", zk.Hosts(), "-i", id, "--"}, recorder(logPath, "b", 300*time.Millisecond)...)...)
			if code := b.wait(t, 30*time.Second); code != 0 {
				t.Fatalf("b: exit %d; log:\n%s", code, b.stderr)
			}
			eventually(t, 30*time.Second, "a's rounds after b's", func() bool {
				runs := readRuns(t, logPath)
				n := 0
				for _, r := range runs {
					if r.who == "a" && r.token > runs[0].token {
						n++
					}
				}
				return n >= 3
			})
			if err := syscall.Kill(a.lockexPid(t, m), syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			// 143 between rounds, the workload's 143 if it ran, or 0 if
			// its main process had exited and lockex was stopping the daemon.
			if code := a.wait(t, 20*time.Second); code != 143 && code != 0 {
				t.Fatalf("a: exit %d; log:\n%s", code, a.stderr)
			}
			if pids := markedAlive(marker); len(pids) > 0 {
				t.Errorf("daemons %v outlived lockex; log:\n%s", pids, a.stderr)
			}
			if b, _ := os.ReadFile(logPath); strings.Count(string(b), "bg ") < 4 {
				t.Fatalf("the daemons did not run; records:\n%s", b)
			}
			runs := readRuns(t, logPath)
			v := judge(runs, nil)
			if len(v.problems) > 0 || v.overlap > 1 {
				t.Errorf("%d runs, overlap %d: %v; log:\n%s", v.runs, v.overlap, v.problems, a.stderr)
			}
			if kids := children(t, conn, "/lockex/"+id); len(kids) != 0 {
				t.Errorf("nodes left: %v", kids)
			}
		})
	}
}

// TestReviewRequeueOutageWithContender: a --requeue holder that ZooKeeper
// cannot reach loses its lock, stops its workload and cannot release (its
// node lives on with its session on the server); its next rounds cannot
// connect. Another lockex, reaching ZooKeeper, takes over only once that
// session expired; when ZooKeeper is back, the first comes back after it.
// Never two at once.
func TestReviewRequeueOutageWithContender(t *testing.T) {
	zk := startZK(t)
	conn := zkClient(t, zk.Hosts())
	proxy := zktest.StartProxy(t, zk.Servers[0].Addr())
	const id = "review-requeue-outage"
	logPath := filepath.Join(t.TempDir(), "records")
	a := startLockex(t, nil, append(append([]string{"-z", proxy.Addr(), "-i", id, "-T", "1", "--requeue",
		"--requeue-backoff", "0.2", "--requeue-backoff-max", "1"}, lossFlags...), append([]string{"--"}, ticker(logPath, "a", 0, false)...)...)...)
	waitRecord(t, logPath, "a")
	b := startLockex(t, nil, lossArgs(zk.Hosts(), id, ticker(logPath, "b", time.Second, false))...)
	eventually(t, 10*time.Second, "b waits", func() bool { return len(children(t, conn, "/lockex/"+id)) == 2 })
	proxy.Cut()
	if code := b.wait(t, 40*time.Second); code != 0 {
		t.Fatalf("b: exit %d; a's log:\n%s\nb's log:\n%s", code, a.stderr, b.stderr)
	}
	if n := countIn(a, "lock lost; stopping the workload"); n != 1 {
		t.Errorf("a: %d losses logged, want 1:\n%s", n, a.stderr)
	}
	proxy.Pass()
	eventually(t, 40*time.Second, "a runs again", func() bool {
		n := 0
		for _, r := range readRuns(t, logPath) {
			if r.who == "a" {
				n++
			}
		}
		return n >= 2
	})
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	if code := a.wait(t, 10*time.Second); code != 143 {
		t.Fatalf("a: exit %d, want the workload's 143; log:\n%s", code, a.stderr)
	}
	runs := readRuns(t, logPath)
	var who []string
	for _, r := range runs {
		who = append(who, r.who)
	}
	v := judge(runs, nil)
	if strings.Join(who, " ") != "a b a" || len(v.problems) > 0 || v.overlap > 1 {
		t.Errorf("runs %v, overlap %d: %v; a's log:\n%s", who, v.overlap, v.problems, a.stderr)
	}
	eventually(t, 20*time.Second, "no node left", func() bool { return len(children(t, conn, "/lockex/"+id)) == 0 })
}

// TestReviewRequeueCtrlCWhileStopping: at --max-runtime lockex stops the
// workload, which ignores SIGTERM and keeps the terminal's foreground
// during the grace; the user's Ctrl-C ends it. design.md §4.5: that ends
// the loop (exit 124, the round's code): no second round.
func TestReviewRequeueCtrlCWhileStopping(t *testing.T) {
	zk := startZK(t)
	conn := zkClient(t, zk.Hosts())
	script := fmt.Sprintf(`%s -z %s -i tty-review-stop --session-timeout 20s --kill-grace 10s --max-runtime 1s --requeue --requeue-backoff 0.1 -- sh -c 'trap "" TERM; echo round; exec sleep 1000'
echo "exit:$?"`, lockexBin, zk.Hosts())
	term, s := startOnTerminal(t, nil, "sh", "-c", script)
	term.expect(t, "round")
	term.waitForeground(t, "sleep")
	term.expect(t, "stopping the workload")
	term.typ(t, "\x03")
	term.expect(t, "exit:")
	if code := s.wait(t, 10*time.Second); code != 0 {
		t.Fatalf("shell exit %d; the terminal shows:\n%s", code, term)
	}
	if !strings.Contains(term.String(), "exit:124") {
		t.Errorf("want exit:124; the terminal shows:\n%s", term)
	}
	n := 0
	for _, line := range strings.Split(term.String(), "\n") {
		if strings.TrimSpace(line) == "round" {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d rounds, want 1; the terminal shows:\n%s", n, term)
	}
	if kids := children(t, conn, "/lockex/tty-review-stop"); len(kids) != 0 {
		t.Errorf("nodes left: %v", kids)
	}
}

// TestReviewRequeueProbesAfterMaxRuntime: a round stopped at
// --max-runtime gives the lock back cleanly; through the backoff lockex
// holds nothing and runs nothing (held 0, running 0, /active 503), stays
// ready on the session it kept (/readyz 200), and has counted the stop;
// the next round holds and runs again (within its 3s), counted as a
// requeue.
func TestReviewRequeueProbesAfterMaxRuntime(t *testing.T) {
	zk := startZK(t)
	const id = "review-requeue-probes"
	const lock = "/lockex/" + id
	a := startObserved(t, nil, "-z", zk.Hosts(), "-i", id, "--max-runtime", "3s", "--kill-grace", "1s",
		"--requeue", "--requeue-backoff", "5s", "--requeue-backoff-max", "5s", "--", "sleep", "60")
	eventually(t, 20*time.Second, "a backs off", func() bool { return countIn(a.started, "contending again after the backoff") == 1 })
	// The backoff is 5s: what follows happens within it.
	a.probes(t, 200, 200, 503)
	check(t, a.metrics(t), lock, map[string]want{
		"lockex_lock_held": gauge(0), "lockex_workload_running": gauge(0), "lockex_zk_connected": gauge(1),
		"lockex_workload_max_runtime_exceeded_total": counter(1), "lockex_lock_requeues_total": counter(0),
	})
	eventually(t, 20*time.Second, "a runs again", func() bool { code, _ := a.get(t, "/active"); return code == 200 })
	check(t, a.metrics(t), lock, map[string]want{
		"lockex_lock_held": gauge(1), "lockex_workload_running": gauge(1), "lockex_lock_requeues_total": counter(1),
	})
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	// The workload's 143, or 124 if the limit came first.
	if code := a.wait(t, 10*time.Second); code != 143 && code != 124 {
		t.Fatalf("exit %d; log:\n%s", code, a.stderr)
	}
}

// TestReviewRequeueJobControlRound2: job control works in a later round
// as in the first: the second round's workload gets the terminal, Ctrl-Z
// stops it and lockex as one job, fg continues both, and Ctrl-C ends it
// and the loop.
func TestReviewRequeueJobControlRound2(t *testing.T) {
	zk := startZK(t)
	dir := t.TempDir()
	term, shell := startOnTerminal(t, []string{"PS1=$ ", "HISTFILE=/dev/null", "D=" + dir},
		"bash", "--norc", "--noprofile", "-i")
	term.expect(t, "$ ")
	workload := `n=$(cat "$D/n" 2>/dev/null || echo 0); n=$((n+1)); echo $n > "$D/n"; echo $$ > "$D/pid$n"; echo ready$n; [ $n -ge 2 ] && exec sleep 1000; exit 0`
	term.typ(t, fmt.Sprintf(`%s -z %s -i tty-review-job --requeue --requeue-backoff 0.1 -- sh -c '%s'`+"\n", lockexBin, zk.Hosts(), workload))
	term.expect(t, "ready2")
	pid := 0
	fmt.Sscan(waitFile(t, filepath.Join(dir, "pid2")), &pid)
	lockexPid, _ := statOf(pid)
	term.waitForeground(t, "sleep")

	term.typ(t, "\x1a")
	term.expect(t, "Stopped")
	for _, p := range []int{pid, lockexPid} {
		if _, state := statOf(p); state != 'T' {
			t.Errorf("pid %d in state %c after Ctrl-Z, want T (stopped)", p, state)
		}
	}
	term.typ(t, "fg\n")
	eventually(t, 10*time.Second, "fg continued the workload and lockex", func() bool {
		_, w := statOf(pid)
		_, l := statOf(lockexPid)
		return w == 'S' && l != 'T'
	})
	term.typ(t, "\x03")
	term.typ(t, "echo exit:$?\n")
	term.expect(t, "exit:130")
	if strings.Contains(term.String(), "ready3") {
		t.Errorf("a third round ran after Ctrl-C; the terminal shows:\n%s", term)
	}
	term.typ(t, "exit\n")
	if code := shell.wait(t, 10*time.Second); code != 0 {
		t.Fatalf("shell exit %d; the terminal shows:\n%s", code, term)
	}
}

// TestReviewRequeueStopWhileRound2Waits: a TERM while a later round waits
// behind another holder ends lockex at once (143) and leaves its waiting
// node nowhere: the holder's is the only one left.
func TestReviewRequeueStopWhileRound2Waits(t *testing.T) {
	zk := startZK(t)
	conn := zkClient(t, zk.Hosts())
	const id = "review-requeue-wait"
	logPath := filepath.Join(t.TempDir(), "records")
	a := startLockex(t, nil, append([]string{"-z", zk.Hosts(), "-i", id, "--requeue", "--requeue-backoff", "0.1", "--"},
		recorder(logPath, "a", 500*time.Millisecond)...)...)
	waitRecord(t, logPath, "a")
	b := startLockex(t, nil, append([]string{"-z", zk.Hosts(), "-i", id, "--"}, recorder(logPath, "b", time.Minute)...)...)
	waitRecord(t, logPath, "b")
	eventually(t, 10*time.Second, "a waits again", func() bool { return len(children(t, conn, "/lockex/"+id)) == 2 })
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	if code := a.wait(t, 10*time.Second); code != 143 {
		t.Fatalf("a: exit %d, want 143; log:\n%s", code, a.stderr)
	}
	if kids := children(t, conn, "/lockex/"+id); len(kids) != 1 {
		t.Errorf("nodes %v, want b's alone", kids)
	}
	if strings.Count(mustRead(t, logPath), " a ") != 2 {
		t.Errorf("a ran more than once:\n%s", mustRead(t, logPath))
	}
	_ = b.cmd.Process.Signal(syscall.SIGTERM)
	b.wait(t, 10*time.Second)
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestReviewRequeueKilledInRound2: lockex SIGKILLed while a later round's
// workload runs, with a daemon that left its session: the guardian, kept
// from round to round, kills both.
func TestReviewRequeueKilledInRound2(t *testing.T) {
	zk := startZK(t)
	dir := t.TempDir()
	const marker = "review-killed-round2"
	workload := `n=$(cat "$D/n" 2>/dev/null || echo 0); n=$((n+1)); echo $n > "$D/n"
[ $n -ge 2 ] || exit 0
setsid sh -c 'trap "" TERM; while :; do sleep 0.05; done' ` + marker + ` &
echo $! > "$D/daemon"; exec sleep 1000 ` + marker
	a := startLockex(t, []string{"D=" + dir}, "-z", zk.Hosts(), "-i", "review-requeue-killed", "--requeue", "--requeue-backoff", "0.1",
		"--", "sh", "-c", workload)
	waitFile(t, filepath.Join(dir, "daemon"))
	eventually(t, 10*time.Second, "round 2's workload and daemon run", func() bool { return len(markedAlive(marker)) == 2 })
	_ = a.cmd.Process.Kill()
	a.wait(t, 10*time.Second)
	eventually(t, 15*time.Second, "the guardian killed round 2's workload and daemon", func() bool { return len(markedAlive(marker)) == 0 })
}

// TestReviewRequeueLockTimeoutRounds: with -t each round waits that long
// and gives up; its waiting node goes as it does, so rounds never pile
// nodes up behind the holder, and a runs once the holder is gone.
func TestReviewRequeueLockTimeoutRounds(t *testing.T) {
	zk := startZK(t)
	conn := zkClient(t, zk.Hosts())
	const id = "review-requeue-t"
	logPath := filepath.Join(t.TempDir(), "records")
	h := startLockex(t, nil, append([]string{"-z", zk.Hosts(), "-i", id, "--"}, recorder(logPath, "h", time.Minute)...)...)
	waitRecord(t, logPath, "h")
	a := startLockex(t, nil, append([]string{"-z", zk.Hosts(), "-i", id, "-t", "0.3", "--requeue", "--requeue-backoff", "0.1", "--requeue-backoff-max", "0.2", "--"},
		recorder(logPath, "a", 0)...)...)
	eventually(t, 30*time.Second, "a gave up three times", func() bool { return countIn(a, "lock not acquired") >= 3 })
	for range 50 {
		if kids := children(t, conn, "/lockex/"+id); len(kids) > 2 {
			t.Fatalf("nodes %v: more than the holder's and a's", kids)
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = h.cmd.Process.Signal(syscall.SIGTERM)
	h.wait(t, 10*time.Second)
	waitRecord(t, logPath, "a")
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	if code := a.wait(t, 10*time.Second); code != 143 && code != 0 {
		t.Fatalf("a: exit %d; log:\n%s", code, a.stderr)
	}
	if v := judge(readRuns(t, logPath), nil); len(v.problems) > 0 || v.overlap > 1 {
		t.Errorf("overlap %d: %v", v.overlap, v.problems)
	}
	if kids := children(t, conn, "/lockex/"+id); len(kids) != 0 {
		t.Errorf("nodes left: %v", kids)
	}
}
