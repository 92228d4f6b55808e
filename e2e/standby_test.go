package e2e

import (
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/lockex/lockex/internal/zktest"
)

// standbyTest is a directory of marker files: a standby's check passes
// while its file exists, and each run of the check is counted in
// <name>.checks; a workload started by waitFor runs until its file exists.
type standbyTest struct {
	t   *testing.T
	dir string
}

func newStandbyTest(t *testing.T) *standbyTest { return &standbyTest{t: t, dir: t.TempDir()} }

func (s *standbyTest) path(name string) string { return filepath.Join(s.dir, name) }

func (s *standbyTest) touch(name string) { touch(s.t, s.path(name)) }

func (s *standbyTest) remove(name string) {
	if err := os.Remove(s.path(name)); err != nil {
		s.t.Fatal(err)
	}
}

// flags are a standby check that passes while name exists, checked every
// 100ms, two failures in a row to leave the queue.
func (s *standbyTest) flags(name string) []string {
	cmd := "sh -c 'echo x >> " + s.path(name+".checks") + "; test -f " + s.path(name) + "'"
	return []string{"--standby-cmd", cmd, "--health-period", "100ms", "--health-timeout", "5s", "--health-failure-threshold", "2"}
}

// checks counts the runs of name's check so far.
func (s *standbyTest) checks(name string) int { return countLines(s.path(name+".checks"), "x") }

// waitFor is a workload that notes its start in <name>.ran and runs until
// the file name exists.
func (s *standbyTest) waitFor(name string) []string {
	return []string{"sh", "-c", "echo $LOCKEX_FENCING_TOKEN >> " + s.path(name+".ran") + "; while ! test -f " + s.path(name) + "; do sleep 0.05; done"}
}

// ran counts the starts of the workload waitFor(name).
func (s *standbyTest) ran(name string) int {
	b, _ := os.ReadFile(s.path(name + ".ran"))
	return strings.Count(string(b), "\n")
}

// lockStat is the lock node's children, sorted by their sequence (the
// queue's order), and its cversion, which every create and delete of a
// child bumps: a node made and deleted between two looks still shows.
func lockStat(t *testing.T, conn *zk.Conn, p string) ([]string, int32) {
	t.Helper()
	names, stat, err := conn.Children(p)
	if err != nil {
		t.Fatalf("children %s: %v", p, err)
	}
	seq := func(n string) string { return n[strings.LastIndex(n, "__")+2:] }
	slices.SortFunc(names, func(a, b string) int { return strings.Compare(seq(a), seq(b)) })
	return names, stat.Cversion
}

// holderOf starts a plain lockex holding lock id whose workload runs until
// the file name exists, and waits for it to hold.
func (s *standbyTest) holderOf(zkHosts, id, name string) *started {
	s.t.Helper()
	h := startLockex(s.t, nil, append([]string{"-z", zkHosts, "-i", id, "--"}, s.waitFor(name)...)...)
	eventually(s.t, 15*time.Second, "the holder runs", func() bool { return s.ran(name) == 1 })
	return h
}

// TestStandbyCheckGatesQueue: a standby whose check fails creates no node
// while the holder runs, check after check (the lock node's cversion does
// not move); once the check passes it queues, and takes over when the
// holder ends. A holder whose own standby check fails once it holds keeps
// its lock: the check stops once the lock is held.
func TestStandbyCheckGatesQueue(t *testing.T) {
	zkc := startZK(t)
	conn := zkClient(t, zkc.Hosts())
	const id = "standby-gate"
	p := "/lockex/" + id
	s := newStandbyTest(t)

	s.touch("a-fit")
	a := startLockex(t, nil, append(append([]string{"-z", zkc.Hosts(), "-i", id}, s.flags("a-fit")...), append([]string{"--"}, s.waitFor("a-done")...)...)...)
	eventually(t, 15*time.Second, "a holds", func() bool { return s.ran("a-done") == 1 })
	s.remove("a-fit") // a's standby check would fail now: it no longer runs
	aChecks := s.checks("a-fit")

	b := startObserved(t, nil, append(append([]string{"-z", zkc.Hosts(), "-i", id}, s.flags("b-fit")...), append([]string{"--"}, s.waitFor("b-done")...)...)...)
	eventually(t, 15*time.Second, "b checks", func() bool { return s.checks("b-fit") >= 1 })
	kids, cv := lockStat(t, conn, p)
	eventually(t, 15*time.Second, "b failed ten checks", func() bool { return s.checks("b-fit") >= 10 })
	if kids2, cv2 := lockStat(t, conn, p); cv2 != cv || len(kids2) != 1 || kids2[0] != kids[0] {
		t.Fatalf("while b's check failed: children %v (cversion %d), before %v (cversion %d); want a's node alone, untouched", kids2, cv2, kids, cv)
	}
	if code, body := b.get(t, "/readyz"); code != 200 {
		t.Errorf("b checking: /readyz %d %q, want 200 (connected)", code, body)
	}
	if _, body := b.get(t, "/healthz"); !strings.Contains(body, "checking this standby before it queues for "+p) {
		t.Errorf("b checking: probe body %q", body)
	}
	m := b.metrics(t)
	if v := value(t, m, "lockex_standby_ready"); v != 0 {
		t.Errorf("b checking: lockex_standby_ready %v, want 0", v)
	}
	if v := value(t, m, "lockex_standby_check_failures_total"); v < 10 {
		t.Errorf("b checking: lockex_standby_check_failures_total %v, want at least 10", v)
	}

	s.touch("b-fit")
	eventually(t, 15*time.Second, "b queues", func() bool { kids, _ := lockStat(t, conn, p); return len(kids) == 2 })
	eventually(t, 15*time.Second, "b is ready", func() bool { return value(t, b.metrics(t), "lockex_standby_ready") == 1 })
	if n := s.checks("a-fit"); n > aChecks+1 {
		t.Errorf("a's standby check ran %d more times while a held the lock", n-aChecks)
	}
	select {
	case <-a.done:
		t.Fatalf("a ended (%d) while its workload ran:\n%s", a.code, a.stderr)
	default:
	}
	if s.ran("b-done") != 0 {
		t.Fatal("b's workload started while a held the lock")
	}

	s.touch("a-done")
	if code := a.wait(t, 15*time.Second); code != 0 {
		t.Fatalf("a: exit %d, want 0:\n%s", code, a.stderr)
	}
	eventually(t, 15*time.Second, "b takes over", func() bool { return s.ran("b-done") == 1 })
	if v := value(t, b.metrics(t), "lockex_standby_ready"); v != 0 {
		t.Errorf("b holding: lockex_standby_ready %v, want 0 (the check no longer decides)", v)
	}
	s.touch("b-done")
	if code := b.wait(t, 15*time.Second); code != 0 {
		t.Fatalf("b: exit %d, want 0:\n%s", code, b.stderr)
	}
	checkLog(t, b.started, p, map[string][]string{
		"checking this standby before it queues":      {"check"},
		"standby check passed; queueing for the lock": {"check"},
	})
	if kids, _ := lockStat(t, conn, p); len(kids) != 0 {
		t.Errorf("nodes left: %v", kids)
	}
}

// TestStandbyLeavesQueue: a queued standby whose check starts failing
// leaves the queue (its node gone), and the contender behind it keeps its
// node and takes over next; once the check passes again it queues again,
// at the back, and takes over after that one. b's /status shows its
// check's state throughout.
func TestStandbyLeavesQueue(t *testing.T) {
	zkc := startZK(t)
	conn := zkClient(t, zkc.Hosts())
	const id = "standby-leave"
	p := "/lockex/" + id
	s := newStandbyTest(t)
	a := s.holderOf(zkc.Hosts(), id, "a-done")

	s.touch("b-fit")
	bHTTP := freePort(t)
	b := startLockex(t, nil, append(append([]string{"-z", zkc.Hosts(), "-i", id, "--log-format", "json", "--http-addr", bHTTP}, s.flags("b-fit")...), append([]string{"--"}, s.waitFor("b-done")...)...)...)
	eventually(t, 15*time.Second, "b queues", func() bool { kids, _ := lockStat(t, conn, p); return len(kids) == 2 })
	if sb := getStatus(t, bHTTP).Instance.Standby; sb == nil || !sb.Fit || !sb.OK || sb.Left != 0 || sb.Threshold != 2 || !strings.Contains(sb.Check, "b-fit") {
		t.Errorf("b queued: /status standby %+v, want fit, ok, left 0, threshold 2, its command", sb)
	}
	c := startLockex(t, nil, append([]string{"-z", zkc.Hosts(), "-i", id, "--"}, s.waitFor("c-done")...)...)
	eventually(t, 15*time.Second, "c queues", func() bool { kids, _ := lockStat(t, conn, p); return len(kids) == 3 })
	queued, _ := lockStat(t, conn, p)

	s.remove("b-fit")
	eventually(t, 15*time.Second, "b leaves the queue", func() bool { kids, _ := lockStat(t, conn, p); return len(kids) == 2 })
	if kids, _ := lockStat(t, conn, p); kids[0] != queued[0] || kids[1] != queued[2] {
		t.Fatalf("after b left: %v, want a's and c's nodes of %v", kids, queued)
	}
	eventually(t, 15*time.Second, "b checks again", func() bool { return countIn(b, `"msg":"checking this standby before it queues"`) == 2 })
	lineWith(t, b, "standby check failed; left the queue")
	if sb := getStatus(t, bHTTP).Instance.Standby; sb == nil || sb.Fit || sb.OK || sb.Left != 1 || sb.Error == "" || sb.LeftError == "" {
		t.Errorf("b left: /status standby %+v, want unfit, failing, left 1, with the failure", sb)
	}

	s.touch("a-done")
	if code := a.wait(t, 15*time.Second); code != 0 {
		t.Fatalf("a: exit %d:\n%s", code, a.stderr)
	}
	eventually(t, 15*time.Second, "c takes over", func() bool { return s.ran("c-done") == 1 })
	if s.ran("b-done") != 0 {
		t.Fatal("b's workload ran: it had left the queue")
	}

	s.touch("b-fit")
	eventually(t, 15*time.Second, "b queues again, behind c", func() bool { kids, _ := lockStat(t, conn, p); return len(kids) == 2 })
	if kids, _ := lockStat(t, conn, p); kids[0] != queued[2] {
		t.Fatalf("after b came back: %v, want c's node %s first", kids, queued[2])
	}
	s.touch("c-done")
	if code := c.wait(t, 15*time.Second); code != 0 {
		t.Fatalf("c: exit %d:\n%s", code, c.stderr)
	}
	eventually(t, 15*time.Second, "b takes over", func() bool { return s.ran("b-done") == 1 })
	s.touch("b-done")
	if code := b.wait(t, 15*time.Second); code != 0 {
		t.Fatalf("b: exit %d:\n%s", code, b.stderr)
	}
	if kids, _ := lockStat(t, conn, p); len(kids) != 0 {
		t.Errorf("nodes left: %v", kids)
	}
}

// TestStandbyLockTimeout: -t counts the checks: a standby whose check
// never passes exits with the busy code once -t passes, having created
// no node (the lock node's cversion does not move); -t 0 looks at the
// check once.
func TestStandbyLockTimeout(t *testing.T) {
	zkc := startZK(t)
	conn := zkClient(t, zkc.Hosts())
	const id = "standby-timeout"
	p := "/lockex/" + id
	s := newStandbyTest(t)
	a := s.holderOf(zkc.Hosts(), id, "a-done")
	_, cv := lockStat(t, conn, p)

	for _, tc := range []struct {
		name  string
		flags []string
		least time.Duration
	}{
		{"-t 1.5", []string{"-t", "1.5"}, 1500 * time.Millisecond},
		{"-t 0", []string{"-t", "0"}, 0},
		{"--no-blocking, own code", []string{"--no-blocking", "--busy-exit-code", "3"}, 0},
	} {
		r := lockex(t, nil, append(append(append([]string{"-z", zkc.Hosts(), "-i", id}, tc.flags...), s.flags("b-fit")...), "--", "true")...)
		want := 75
		if strings.Contains(tc.name, "own code") {
			want = 3
		}
		if r.code != want || r.took < tc.least {
			t.Errorf("%s: exit %d after %s, want %d after at least %s:\n%s", tc.name, r.code, r.took, want, tc.least, r.stderr)
		}
		if !strings.Contains(r.stderr, "lock not acquired") {
			t.Errorf("%s: no line says the lock was not acquired:\n%s", tc.name, r.stderr)
		}
	}
	if kids, cv2 := lockStat(t, conn, p); len(kids) != 1 || cv2 != cv {
		t.Errorf("after the standbys gave up: %v (cversion %d, was %d), want the holder's node alone, untouched", kids, cv2, cv)
	}
	s.touch("a-done")
	a.wait(t, 15*time.Second)
}

// TestStandbySignal: TERM while the standby checks, and while it is
// queued, ends lockex at once (143), with nothing left in ZooKeeper.
func TestStandbySignal(t *testing.T) {
	zkc := startZK(t)
	conn := zkClient(t, zkc.Hosts())
	const id = "standby-signal"
	p := "/lockex/" + id
	s := newStandbyTest(t)
	a := s.holderOf(zkc.Hosts(), id, "a-done")

	for _, fit := range []bool{false, true} {
		name := map[bool]string{false: "checking", true: "queued"}[fit]
		if fit {
			s.touch("b-fit")
		}
		b := startLockex(t, nil, append(append([]string{"-z", zkc.Hosts(), "-i", id}, s.flags("b-fit")...), "--", "true")...)
		if fit {
			eventually(t, 15*time.Second, "b queues", func() bool { kids, _ := lockStat(t, conn, p); return len(kids) == 2 })
		} else {
			eventually(t, 15*time.Second, "b checks three times", func() bool { return s.checks("b-fit") >= 3 })
		}
		_ = b.cmd.Process.Signal(syscall.SIGTERM)
		if code := b.wait(t, 5*time.Second); code != 143 {
			t.Errorf("%s: exit %d, want 143:\n%s", name, code, b.stderr)
		}
		if !strings.Contains(b.stderr.String(), "stopped while waiting for the lock") {
			t.Errorf("%s: no line says it was stopped:\n%s", name, b.stderr)
		}
		if kids, _ := lockStat(t, conn, p); len(kids) != 1 {
			t.Errorf("%s: after b's exit: %v, want the holder's node alone", name, kids)
		}
	}
	s.touch("a-done")
	a.wait(t, 15*time.Second)
}

// TestStandbyRequeue: with --requeue each round checks before it queues:
// a round whose check fails queues nothing, and one whose check passes
// again takes the lock again.
func TestStandbyRequeue(t *testing.T) {
	zkc := startZK(t)
	conn := zkClient(t, zkc.Hosts())
	const id = "standby-requeue"
	p := "/lockex/" + id
	s := newStandbyTest(t)
	s.touch("b-fit")
	b := startLockex(t, nil, append(append([]string{"-z", zkc.Hosts(), "-i", id, "--log-format", "json", "--requeue", "--requeue-backoff", "0.2"},
		s.flags("b-fit")...), append([]string{"--"}, s.waitFor("b-done")...)...)...)
	eventually(t, 15*time.Second, "b's first round runs", func() bool { return s.ran("b-done") == 1 })
	s.remove("b-fit")
	s.touch("b-done") // the workload ends, and the next one at once
	eventually(t, 15*time.Second, "b's second round checks", func() bool {
		return countIn(b, `"msg":"checking this standby before it queues"`) == 2
	})
	before := s.checks("b-fit")
	eventually(t, 15*time.Second, "five more failed checks", func() bool { return s.checks("b-fit") >= before+5 })
	if kids := children(t, conn, p); len(kids) != 0 {
		t.Fatalf("round 2 queued while its check failed: %v", kids)
	}
	if n := s.ran("b-done"); n != 1 {
		t.Fatalf("the workload ran %d times, want once", n)
	}
	s.touch("b-fit")
	eventually(t, 15*time.Second, "b's second round runs", func() bool { return s.ran("b-done") >= 2 })
	_ = b.cmd.Process.Signal(syscall.SIGTERM)
	if code := b.wait(t, 15*time.Second); code != 143 && code != 0 {
		t.Fatalf("b: exit %d, want 143 (stopped between rounds or while checking) or 0 (the workload's):\n%s", code, b.stderr)
	}
	if kids := children(t, conn, p); len(kids) != 0 {
		t.Errorf("nodes left: %v", kids)
	}
}

// TestStandbyCmdReaped: --standby-cmd runs through lockex's reaper, as PID
// 1 and with --subreaper: a failing check, one that hangs past its
// timeout (killed), and one that passes leave neither zombies nor what
// they started in their process group, and the standby queues and takes
// over once its check passes.
func TestStandbyCmdReaped(t *testing.T) {
	zkc := startZK(t)
	conn := zkClient(t, zkc.Hosts())
	check, err := filepath.Abs("testdata/health_check.sh")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			id := "standby-reaped-" + m.name
			p := "/lockex/" + id
			s := newStandbyTest(t)
			mark := strconv.Itoa(800000 + rand.IntN(99999))
			sleep, err := exec.LookPath("sleep")
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(sleep, s.path("lo-"+mark)); err != nil {
				t.Fatal(err)
			}
			a := s.holderOf(zkc.Hosts(), id, "a-done")
			s.touch("sick")
			b := m.start(t, nil, "-z", zkc.Hosts(), "-i", id, "--standby-cmd", check+" "+s.dir+" "+mark,
				"--health-period", "100ms", "--health-timeout", "1s", "--health-failure-threshold", "2",
				"--", "sh", "-c", "echo $LOCKEX_FENCING_TOKEN >> "+s.path("b.ran"))
			pid := b.lockexPid(t, m)
			checks := func() int { return countLines(s.path("checks"), "check") }
			eventually(t, 15*time.Second, "five failed checks", func() bool { return checks() >= 5 })
			// Checks run every 100ms: between two, nothing of them is left.
			eventually(t, 10*time.Second, "between failed checks, nothing of them left, no zombies", func() bool {
				return leftovers(mark) == 0 && zombiesOf(pid) == 0
			})
			s.touch("hang")
			s.remove("sick")
			seen := checks()
			eventually(t, 15*time.Second, "two hung checks", func() bool { return checks() >= seen+2 })
			if kids, _ := lockStat(t, conn, p); len(kids) != 1 {
				t.Fatalf("while b's check failed: %v, want a's node alone", kids)
			}
			s.remove("hang")
			eventually(t, 15*time.Second, "b queues", func() bool { kids, _ := lockStat(t, conn, p); return len(kids) == 2 })
			// The hung checks were killed at their timeout, with what they
			// started: else their sleeps would still be there.
			eventually(t, 10*time.Second, "between passed checks, nothing of the checks left, no zombies", func() bool {
				return leftovers(mark) == 0 && zombiesOf(pid) == 0
			})
			s.touch("a-done")
			a.wait(t, 15*time.Second)
			if code := b.wait(t, 15*time.Second); code != 0 {
				t.Fatalf("b: exit %d:\n%s", code, b.stderr)
			}
			if s.ran("b") != 1 {
				t.Errorf("b's workload ran %d times, want once", s.ran("b"))
			}
			eventually(t, 10*time.Second, "nothing left of the checks after lockex", func() bool { return leftovers(mark) == 0 })
		})
	}
}

// zombiesOf counts pid's children that have exited and are not yet reaped.
func zombiesOf(pid int) int {
	n := 0
	for _, kid := range childrenOf(pid) {
		if _, state := statOf(kid); state == 'Z' {
			n++
		}
	}
	return n
}

// TestStandbySemaphore: -c 2: a standby waiting for a lease leaves the
// semaphore's queue when its check fails (its node under P-__lock__ gone,
// the leases and the contender behind it untouched), and comes back to
// take a lease once its check passes.
func TestStandbySemaphore(t *testing.T) {
	zkc := startZK(t)
	conn := zkClient(t, zkc.Hosts())
	const id = "standby-sem"
	p, q := "/lockex/"+id, "/lockex/"+id+"-__lock__"
	s := newStandbyTest(t)
	sem := func(extra []string, name string) *started {
		return startLockex(t, nil, append(append([]string{"-z", zkc.Hosts(), "-i", id, "-c", "2"}, extra...), append([]string{"--"}, s.waitFor(name)...)...)...)
	}
	a1, a2 := sem(nil, "a-done"), sem(nil, "a-done")
	eventually(t, 15*time.Second, "two leases held", func() bool { return s.ran("a-done") == 2 })
	leases, _ := lockStat(t, conn, p)

	s.touch("b-fit")
	b := sem(s.flags("b-fit"), "b-done")
	eventually(t, 15*time.Second, "b waits for a lease", func() bool { kids, _ := lockStat(t, conn, q); return len(kids) == 1 })
	c := sem(nil, "c-done")
	eventually(t, 15*time.Second, "c waits behind b", func() bool { kids, _ := lockStat(t, conn, q); return len(kids) == 2 })
	queued, _ := lockStat(t, conn, q)

	s.remove("b-fit")
	eventually(t, 15*time.Second, "b leaves", func() bool { kids, _ := lockStat(t, conn, q); return len(kids) == 1 })
	if kids, _ := lockStat(t, conn, q); kids[0] != queued[1] {
		t.Fatalf("after b left: %v, want c's node of %v", kids, queued)
	}
	if now, _ := lockStat(t, conn, p); !slices.Equal(now, leases) {
		t.Fatalf("leases %v, were %v", now, leases)
	}
	s.touch("a-done")
	for _, a := range []*started{a1, a2} {
		if code := a.wait(t, 15*time.Second); code != 0 {
			t.Fatalf("a: exit %d:\n%s", code, a.stderr)
		}
	}
	eventually(t, 15*time.Second, "c takes a lease", func() bool { return s.ran("c-done") == 1 })
	if s.ran("b-done") != 0 {
		t.Fatal("b's workload ran while its check failed")
	}
	s.touch("b-fit")
	eventually(t, 15*time.Second, "b takes a lease", func() bool { return s.ran("b-done") == 1 })
	s.touch("b-done")
	s.touch("c-done")
	for _, x := range []*started{b, c} {
		if code := x.wait(t, 15*time.Second); code != 0 {
			t.Fatalf("exit %d:\n%s", code, x.stderr)
		}
	}
	for _, path := range []string{p, q} {
		if kids, _ := lockStat(t, conn, path); len(kids) != 0 {
			t.Errorf("nodes left under %s: %v", path, kids)
		}
	}
}

// TestStandbyLeavesCutOff: a queued standby cut off from ZooKeeper when
// its check starts failing cannot delete its node; it replaces its
// session, cannot make one either, and exits 69 (no --requeue). Its node
// goes with its old session's expiry: the contender behind it, whose node
// is untouched, takes over when the holder ends, and nothing is left.
func TestStandbyLeavesCutOff(t *testing.T) {
	zkc := startZK(t)
	conn := zkClient(t, zkc.Hosts())
	const id = "standby-cut"
	p := "/lockex/" + id
	s := newStandbyTest(t)
	a := s.holderOf(zkc.Hosts(), id, "a-done")
	proxy := zktest.StartProxy(t, zkc.Hosts())

	s.touch("b-fit")
	b := startLockex(t, nil, append(append([]string{"-z", proxy.Addr(), "-i", id, "-T", "1s", "--session-timeout", "2s", "--kill-grace", "0.5s"},
		s.flags("b-fit")...), append([]string{"--"}, s.waitFor("b-done")...)...)...)
	eventually(t, 15*time.Second, "b queues", func() bool { kids, _ := lockStat(t, conn, p); return len(kids) == 2 })
	c := startLockex(t, nil, append([]string{"-z", zkc.Hosts(), "-i", id, "--"}, s.waitFor("c-done")...)...)
	eventually(t, 15*time.Second, "c queues", func() bool { kids, _ := lockStat(t, conn, p); return len(kids) == 3 })
	queued, _ := lockStat(t, conn, p)

	proxy.Cut()
	s.remove("b-fit")
	if code := b.wait(t, 30*time.Second); code != 69 {
		t.Fatalf("b: exit %d, want 69 (no new session):\n%s", code, b.stderr)
	}
	for _, line := range []string{"could not delete own lock node", "standby check failed; left the queue", "lock not acquired"} {
		if !strings.Contains(b.stderr.String(), line) {
			t.Errorf("b's log lacks %q:\n%s", line, b.stderr)
		}
	}
	eventually(t, 15*time.Second, "b's node goes with its session", func() bool { kids, _ := lockStat(t, conn, p); return len(kids) == 2 })
	if kids, _ := lockStat(t, conn, p); kids[0] != queued[0] || kids[1] != queued[2] {
		t.Fatalf("after b's session expired: %v, want a's and c's nodes of %v", kids, queued)
	}
	s.touch("a-done")
	a.wait(t, 15*time.Second)
	eventually(t, 15*time.Second, "c takes over", func() bool { return s.ran("c-done") == 1 })
	s.touch("c-done")
	if code := c.wait(t, 15*time.Second); code != 0 {
		t.Fatalf("c: exit %d:\n%s", code, c.stderr)
	}
	if s.ran("b-done") != 0 {
		t.Error("b's workload ran")
	}
	if kids, _ := lockStat(t, conn, p); len(kids) != 0 {
		t.Errorf("nodes left: %v", kids)
	}
}

// TestStandbySessionExpiresWhileChecking: a standby whose session expires
// while its check fails (it has no node then) queues in the session that
// replaces it once its check passes, and takes over.
func TestStandbySessionExpiresWhileChecking(t *testing.T) {
	zkc := startZK(t)
	conn := zkClient(t, zkc.Hosts())
	const id = "standby-expired"
	p := "/lockex/" + id
	s := newStandbyTest(t)
	a := s.holderOf(zkc.Hosts(), id, "a-done")
	proxy := zktest.StartProxy(t, zkc.Hosts())
	b := startLockex(t, nil, append(append([]string{"-z", proxy.Addr(), "-i", id, "--session-timeout", "1s", "--kill-grace", "0.2s"},
		s.flags("b-fit")...), append([]string{"--"}, s.waitFor("b-done")...)...)...)
	eventually(t, 15*time.Second, "b checks", func() bool { return s.checks("b-fit") >= 2 })
	m := regexp.MustCompile(`session_id=0x([0-9a-f]+)`).FindStringSubmatch(b.stderr.String())
	if m == nil {
		t.Fatalf("no session id in b's log:\n%s", b.stderr)
	}
	dump := func() string {
		out, err := zktest.FourLetter(zkc.Hosts(), "dump")
		if err != nil {
			t.Fatalf("dump: %v", err)
		}
		return out
	}
	// A live session moves between the server's expiry buckets at every
	// request (a sync every 25ms here), and a dump taken meanwhile can miss
	// it; one that is cut off is not touched, so its absence is certain.
	eventually(t, 15*time.Second, "b's session in the server's dump", func() bool { return strings.Contains(dump(), m[1]) })
	proxy.Cut()
	eventually(t, 15*time.Second, "the server expires b's session", func() bool { return !strings.Contains(dump(), m[1]) })
	proxy.Pass()
	eventually(t, 15*time.Second, "b sees the expiry", func() bool { return strings.Contains(b.stderr.String(), "zookeeper session expired") })
	if kids, _ := lockStat(t, conn, p); len(kids) != 1 {
		t.Fatalf("b queued while its check failed: %v", kids)
	}
	s.touch("b-fit")
	eventually(t, 15*time.Second, "b queues", func() bool { kids, _ := lockStat(t, conn, p); return len(kids) == 2 })
	s.touch("a-done")
	a.wait(t, 15*time.Second)
	eventually(t, 15*time.Second, "b takes over", func() bool { return s.ran("b-done") == 1 })
	s.touch("b-done")
	if code := b.wait(t, 15*time.Second); code != 0 {
		t.Fatalf("b: exit %d:\n%s", code, b.stderr)
	}
	if kids, _ := lockStat(t, conn, p); len(kids) != 0 {
		t.Errorf("nodes left: %v", kids)
	}
}

// TestStandbyURL: --standby-url against a real HTTP server: 503 keeps the
// standby out of the queue, 200 queues it, 503 twice in a row takes it
// out again.
func TestStandbyURL(t *testing.T) {
	zkc := startZK(t)
	conn := zkClient(t, zkc.Hosts())
	const id = "standby-url"
	p := "/lockex/" + id
	s := newStandbyTest(t)
	a := s.holderOf(zkc.Hosts(), id, "a-done")
	var fit atomic.Bool
	var asked atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		asked.Add(1)
		if !fit.Load() {
			http.Error(w, "replica behind", http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	b := startObserved(t, nil, "-z", zkc.Hosts(), "-i", id, "--standby-url", srv.URL+"/fit", "--health-period", "100ms",
		"--health-timeout", "5s", "--health-failure-threshold", "2", "--", "true")
	eventually(t, 15*time.Second, "five checks", func() bool { return asked.Load() >= 5 })
	if kids, _ := lockStat(t, conn, p); len(kids) != 1 {
		t.Fatalf("b queued while its URL answered 503: %v", kids)
	}
	if _, body := b.get(t, "/readyz"); !strings.Contains(body, "GET "+srv.URL+"/fit: 503 Service Unavailable") {
		t.Errorf("probe body %q lacks the check's failure", body)
	}
	fit.Store(true)
	eventually(t, 15*time.Second, "b queues", func() bool { kids, _ := lockStat(t, conn, p); return len(kids) == 2 })
	fit.Store(false)
	eventually(t, 15*time.Second, "b leaves", func() bool { kids, _ := lockStat(t, conn, p); return len(kids) == 1 })
	eventually(t, 15*time.Second, "b left once", func() bool {
		return value(t, b.metrics(t), "lockex_standby_ready") == 0 && strings.Contains(b.stderr.String(), "standby check failed; left the queue")
	})
	_ = b.cmd.Process.Signal(syscall.SIGTERM)
	if code := b.wait(t, 10*time.Second); code != 143 {
		t.Fatalf("b: exit %d, want 143:\n%s", code, b.stderr)
	}
	s.touch("a-done")
	a.wait(t, 15*time.Second)
	if kids, _ := lockStat(t, conn, p); len(kids) != 0 {
		t.Errorf("nodes left: %v", kids)
	}
}
