package e2e

import (
	"bufio"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"
	"github.com/lockex/lockex/internal/zktest"
)

// Crash-restart takeover (docs/design.md §3.4): a container's lockex, PID 1
// of its PID namespace, is killed with everything in the namespace; its
// session lives on in ZooKeeper until it expires. Started again with the
// same pod UID and container name, as PID 1, it deletes the dead
// incarnation's node at once, and the next in line takes over while that
// session still lives. Here a container is a PID namespace (unshare), and
// its pod's identity the variables the chart sets from the downward API.

// podIdentity is what the chart tells lockex about its container.
type podIdentity struct{ uid, container string }

func newPod(container string) podIdentity {
	var b [16]byte
	rand.Read(b[:])
	return podIdentity{uid: fmt.Sprintf("%x-%x-%x-%x-%x", b[:4], b[4:6], b[6:8], b[8:10], b[10:]), container: container}
}

func (p podIdentity) env() []string {
	if p.uid == "" {
		return nil
	}
	host, _ := os.Hostname()
	return []string{"LOCKEX_POD_UID=" + p.uid, "LOCKEX_CONTAINER_NAME=" + p.container,
		"LOCKEX_POD_NAMESPACE=e2e", "LOCKEX_POD_NAME=" + host}
}

var (
	pid1Mode  = mode{name: "pid1", pid1: true}
	plainMode = mode{name: "plain", plain: true}
)

// incarnation is one start of a container's lockex.
type incarnation struct {
	m   mode
	pod podIdentity
}

// takeoverRun is one lock, a directory where each workload writes a file
// named after its lockex once it runs, and the ZooKeeper they use.
type takeoverRun struct {
	t    *testing.T
	zk   *zktest.Cluster
	conn *zk.Conn
	id   string
	dir  string
	args []string // before the lock id: -c N, the session timeout
	env  []string // every lockex's
	root string   // the chroot, "" for none
}

func newTakeoverRun(t *testing.T, zkc *zktest.Cluster, conn *zk.Conn, id string, args ...string) *takeoverRun {
	return &takeoverRun{t: t, zk: zkc, conn: conn, id: id, dir: t.TempDir(),
		args: append([]string{"-z", zkc.Hosts(), "--session-timeout", "20s"}, args...)}
}

// secure makes every lockex of the run use chroot /secure and digest
// auth, and the run's own session the same credentials: the nodes are
// creator-only, and a restarted lockex deletes with the credentials that
// created them.
func (r *takeoverRun) secure() {
	r.t.Helper()
	r.root = "/secure"
	r.args[1] += r.root
	r.args = append(r.args, "--zk-user", "kit")
	r.env = []string{"LOCKEX_ZK_PASSWORD=s3cret"}
	r.conn = zkClient(r.t, r.zk.Hosts())
	if err := r.conn.AddAuth("digest", []byte("kit:s3cret")); err != nil {
		r.t.Fatal(err)
	}
}

// start starts lockex as inc, named name; with addr, it serves /metrics
// there.
func (r *takeoverRun) start(inc incarnation, name, addr string) *started {
	r.t.Helper()
	args := append(append([]string{}, r.args...), "-i", r.id)
	if addr != "" {
		args = append(args, "--http-addr", addr)
	}
	args = append(args, "--", "sh", "-c", `echo ok > "$D/`+name+`"; exec sleep 1000`)
	return inc.m.start(r.t, append(append(inc.pod.env(), r.env...), "D="+r.dir), args...)
}

func (r *takeoverRun) running(name string) bool {
	_, err := os.Stat(filepath.Join(r.dir, name))
	return err == nil
}

func (r *takeoverRun) waitRunning(name string) {
	r.t.Helper()
	eventually(r.t, 20*time.Second, name+"'s workload runs", func() bool { return r.running(name) })
}

// queued waits until the lock's nodes (under P, and P-__lock__ for a
// semaphore) number n.
func (r *takeoverRun) queued(n int, what string) {
	r.t.Helper()
	eventually(r.t, 20*time.Second, what, func() bool { return len(r.nodes()) == n })
}

// queuedBeside waits until the lock has one node that before lacks: the
// latest lockex's, whatever happened to those of before.
func (r *takeoverRun) queuedBeside(before []node, what string) {
	r.t.Helper()
	eventually(r.t, 20*time.Second, what, func() bool {
		added := 0
		for _, n := range r.nodes() {
			if !slices.ContainsFunc(before, func(b node) bool { return b.path == n.path }) {
				added++
			}
		}
		return added == 1
	})
}

// node is one of the lock's nodes, with its data and owner.
type node struct {
	path  string
	data  string
	owner int64
}

func (r *takeoverRun) nodes() []node {
	r.t.Helper()
	var out []node
	for _, parent := range []string{r.root + "/lockex/" + r.id, r.root + "/lockex/" + r.id + "-__lock__"} {
		for _, kid := range children(r.t, r.conn, parent) {
			p := parent + "/" + kid
			data, stat, err := r.conn.Get(p)
			if err == zk.ErrNoNode {
				continue
			}
			if err != nil {
				r.t.Fatalf("get %s: %v", p, err)
			}
			out = append(out, node{p, string(data), stat.EphemeralOwner})
		}
	}
	return out
}

// nodesOf are the lock's nodes whose data names pod.
func (r *takeoverRun) nodesOf(pod podIdentity) []node {
	r.t.Helper()
	var out []node
	for _, n := range r.nodes() {
		if strings.Contains(n.data, " uid="+pod.uid+" ") {
			out = append(out, n)
		}
	}
	return out
}

func (r *takeoverRun) exists(p string) bool {
	r.t.Helper()
	ok, _, err := r.conn.Exists(p)
	if err != nil {
		r.t.Fatal(err)
	}
	return ok
}

// sessionAlive reports whether the server still tracks session id, from
// its four-letter dump of sessions and their expiry.
func (r *takeoverRun) sessionAlive(id int64) bool {
	r.t.Helper()
	out, err := zktest.FourLetter(r.zk.Servers[0].Addr(), "dump")
	if err != nil {
		r.t.Fatalf("dump: %v", err)
	}
	return strings.Contains(out, fmt.Sprintf("\t0x%x\n", uint64(id)))
}

// crash SIGKILLs lockex, PID 1 of its namespace: the kernel kills the
// whole namespace with it, the workload too. Nothing closes its session.
func crash(t *testing.T, s *started) {
	t.Helper()
	if err := syscall.Kill(s.lockexPid(t, pid1Mode), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// unshare exits once its child, PID 1, is reaped: after every process
	// of the namespace is gone.
	s.wait(t, 10*time.Second)
}

// stopAndLog stops lockex and returns its log, which may be read only once
// it has exited.
func stopAndLog(t *testing.T, s *started, m mode) string {
	t.Helper()
	_ = syscall.Kill(s.lockexPid(t, m), syscall.SIGTERM)
	s.wait(t, 20*time.Second)
	return s.stderr.String()
}

const takeoverLine = "deleted the node of this container's earlier incarnation"

// TestTakeOverAfterCrash: the crashed incarnation held the lock, waited
// for it, or held a semaphore's lease; restarted, it deletes its node and
// the next in line takes over while the dead incarnation's session lives.
func TestTakeOverAfterCrash(t *testing.T) {
	zkc := startZK(t)
	conn := zkClient(t, zkc.Hosts())
	pod := newPod("app")
	first := incarnation{pid1Mode, pod}
	for _, tc := range []struct {
		name string
		args []string
		// holder, when set, holds ahead of the crashed incarnation and is
		// stopped once it restarted: the crashed one was a waiter.
		holder bool
		// other leases held beside the crashed incarnation's.
		leases int
		secure bool // a chroot and digest auth
	}{
		{name: "holder"},
		{name: "waiter", holder: true},
		{name: "semaphore lease", args: []string{"-c", "2"}, leases: 1},
		{name: "holder in a chroot with digest auth", secure: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newTakeoverRun(t, zkc, conn, "crash-"+strings.ReplaceAll(tc.name, " ", "-"), tc.args...)
			if tc.secure {
				r.secure()
			}
			var holder *started
			nodes := 0
			if tc.holder {
				holder = r.start(incarnation{m: plainMode}, "holder", "")
				r.waitRunning("holder")
				nodes++
			}
			for i := range tc.leases {
				r.start(incarnation{m: plainMode}, fmt.Sprintf("lease%d", i), "")
				r.waitRunning(fmt.Sprintf("lease%d", i))
				nodes++
			}
			crashed := r.start(first, "first", "")
			nodes++
			if tc.holder {
				r.queued(nodes, "the first incarnation queued")
			} else {
				r.waitRunning("first")
			}
			r.start(incarnation{m: plainMode}, "next", "")
			nodes++
			r.queued(nodes, "the next in line queued")
			if !tc.holder && tc.leases == 0 {
				// The crashed lock holder's node says since when it held, after
				// its identity: the takeover must still know it.
				eventually(t, 20*time.Second, "the first incarnation says since when it holds", func() bool {
					old := r.nodesOf(pod)
					return len(old) == 1 && strings.Contains(old[0].data, " since=")
				})
			}
			old := r.nodesOf(pod)
			// A holder's node says since when it holds, after its identity.
			var ident string
			if len(old) == 1 {
				ident, _, _ = strings.Cut(old[0].data, " since=")
			}
			if len(old) != 1 || !strings.HasPrefix(ident, fmt.Sprintf("%s:1 lockex/%s pod=e2e/", hostname(t), lockexVersion)) ||
				!strings.HasSuffix(ident, " uid="+pod.uid+" container=app") {
				t.Fatalf("the first incarnation's nodes: %+v, want one with its identity as PID 1", old)
			}

			crash(t, crashed)
			if !r.exists(old[0].path) {
				t.Fatalf("%s went with the crash: its session was closed, nothing to take over", old[0].path)
			}
			addr := freePort(t)
			restarted := r.start(first, "restarted", addr)
			if holder != nil {
				// The dead waiter's node goes, so the holder's release
				// reaches the next in line.
				eventually(t, 20*time.Second, "the dead waiter's node deleted", func() bool { return !r.exists(old[0].path) })
				stopAndLog(t, holder, plainMode)
			}
			r.waitRunning("next")
			if !r.sessionAlive(old[0].owner) {
				t.Errorf("the next in line took over only after the crashed incarnation's session %#x expired", old[0].owner)
			}
			if r.exists(old[0].path) {
				t.Errorf("%s, the crashed incarnation's node, is still there", old[0].path)
			}
			// Counted just after the delete's answer, which the next in
			// line may beat.
			eventually(t, 10*time.Second, "lockex_earlier_nodes_deleted_total 1", func() bool {
				v, ok := metricValue(addr, "lockex_earlier_nodes_deleted_total")
				return ok && v == 1
			})
			if r.running("restarted") {
				t.Errorf("the restarted incarnation runs its workload: it jumped the queue")
			}
			log := stopAndLog(t, restarted, pid1Mode)
			// lockex names paths inside the chroot.
			if n, inside := strings.Count(log, takeoverLine), strings.TrimPrefix(old[0].path, r.root); n != 1 || !strings.Contains(log, inside) {
				t.Errorf("want one line %q naming %s; log:\n%s", takeoverLine, inside, log)
			}
			if tc.secure {
				if _, _, err := conn.Children(r.root + "/lockex/" + r.id); err != zk.ErrNoAuth {
					t.Errorf("an unauthenticated client lists the lock: %v, want %v (creator-only nodes)", err, zk.ErrNoAuth)
				}
			}
		})
	}
}

func hostname(t *testing.T) string {
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	return host
}

// TestNoTakeOver: nodes that are not a dead earlier incarnation's stay,
// whatever else they share with the lockex that starts: it queues behind
// them. A live lockex that is not PID 1 shares the identity of its
// container; the variables alone, or the host name alone, prove nothing.
func TestNoTakeOver(t *testing.T) {
	zkc := startZK(t)
	conn := zkClient(t, zkc.Hosts())
	pod := newPod("app")
	subreaper := mode{name: "subreaper"}
	for _, tc := range []struct {
		name         string
		first, again incarnation
		crash        bool
		// expires: the session is short, and the next in line is seen to
		// take over only once the dead one expired.
		expires bool
	}{
		{"restarted not PID 1", incarnation{pid1Mode, pod}, incarnation{plainMode, pod}, true, true},
		{"other container", incarnation{pid1Mode, pod}, incarnation{pid1Mode, podIdentity{pod.uid, "sidecar"}}, true, false},
		{"other pod", incarnation{pid1Mode, pod}, incarnation{pid1Mode, newPod("app")}, true, false},
		{"no pod identity, same host", incarnation{m: pid1Mode}, incarnation{m: pid1Mode}, true, false},
		// kubectl exec's lockex, or one in a pod that shares its PID
		// namespace: alive, same variables, not PID 1.
		{"live holder not PID 1", incarnation{subreaper, pod}, incarnation{pid1Mode, pod}, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var short []string
			if tc.expires {
				short = []string{"--session-timeout", "4s", "--kill-grace", "1s"}
			}
			r := newTakeoverRun(t, zkc, conn, "keep-"+strings.ReplaceAll(tc.name, " ", "-"), short...)
			first := r.start(tc.first, "first", "")
			r.waitRunning("first")
			r.start(incarnation{m: plainMode}, "next", "")
			r.queued(2, "the next in line queued")
			before := r.nodes()
			if tc.crash {
				crash(t, first)
			}
			addr := freePort(t)
			again := r.start(tc.again, "again", addr)
			r.queuedBeside(before, "the second incarnation queued")
			for _, n := range before {
				if !r.exists(n.path) {
					t.Errorf("%s (%q) was deleted", n.path, n.data)
				}
			}
			if r.running("next") {
				t.Errorf("the next in line took over")
			}
			if v, ok := metricValue(addr, "lockex_earlier_nodes_deleted_total"); !ok || v != 0 {
				t.Errorf("lockex_earlier_nodes_deleted_total = %v (%v), want 0", v, ok)
			}
			if tc.expires {
				i := slices.IndexFunc(before, func(n node) bool { return strings.Contains(n.data, " uid="+pod.uid+" ") })
				r.waitRunning("next")
				if i < 0 || r.sessionAlive(before[i].owner) {
					t.Errorf("the next in line took over while the dead session of %+v lived", before)
				}
			}
			if log := stopAndLog(t, again, tc.again.m); strings.Contains(log, takeoverLine) {
				t.Errorf("log says %q:\n%s", takeoverLine, log)
			}
		})
	}
}

// TestNoTakeOverOfKazoo: a kazoo client whose identifier contains the
// restarted lockex's identity, but is not exactly it, keeps its lock.
func TestNoTakeOverOfKazoo(t *testing.T) {
	zkc := startZK(t)
	conn := zkClient(t, zkc.Hosts())
	pod := newPod("app")
	r := newTakeoverRun(t, zkc, conn, "kazoo")
	ident := fmt.Sprintf("%s:1 lockex/%s pod=e2e/%s uid=%s container=app", hostname(t), lockexVersion, hostname(t), pod.uid)
	for _, near := range []string{"kazoo " + ident, ident + " ", strings.Replace(ident, "lockex/", "lockex/v", 1) + "%"} {
		cmd := exec.Command(python, "testdata/kazoo_peer.py", zkc.Hosts(), "hold-lock", "/lockex/kazoo", near)
		stdin, _ := cmd.StdinPipe()
		stdout, _ := cmd.StdoutPipe()
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatalf("kazoo peer: %v (make test installs python3-kazoo)", err)
		}
		if line, _ := bufio.NewReader(stdout).ReadString('\n'); strings.TrimSpace(line) != "held" {
			t.Fatalf("kazoo peer did not take the lock: %q", line)
		}
		before := r.nodes()
		again := r.start(incarnation{pid1Mode, pod}, "again", "")
		r.queuedBeside(before, "lockex queued behind kazoo")
		if len(before) != 1 || !r.exists(before[0].path) {
			t.Errorf("kazoo's node %+v is gone", before)
		}
		log := stopAndLog(t, again, pid1Mode)
		if strings.Contains(log, takeoverLine) {
			t.Errorf("kazoo's %q taken over:\n%s", near, log)
		}
		stdin.Close()
		if err := cmd.Wait(); err != nil {
			t.Errorf("kazoo holder %q lost its lock: %v", near, err)
		}
	}
}

// TestWorkloadGetsNoIdentity: the workload's environment lacks the pod UID
// and container name, so a lockex it starts, PID 1 of a namespace of its
// own, cannot take this one's nodes for a dead incarnation's.
func TestWorkloadGetsNoIdentity(t *testing.T) {
	zkc := startZK(t)
	conn := zkClient(t, zkc.Hosts())
	pod := newPod("app")
	r := newTakeoverRun(t, zkc, conn, "nested")
	env := append(pod.env(), "D="+r.dir)
	nested := fmt.Sprintf(`env > "$D/env"; exec unshare --pid --fork --mount-proc --kill-child %s -z %s -i nested --session-timeout 20s -- sh -c 'echo ok > "$D/nested"'`, lockexBin, zkc.Hosts())
	outer := pid1Mode.start(t, env, append(append([]string{}, r.args...), "-i", "nested", "--", "sh", "-c", nested)...)
	envOut := waitFile(t, filepath.Join(r.dir, "env"))
	if strings.Contains(envOut, "LOCKEX_POD_UID=") || strings.Contains(envOut, "LOCKEX_CONTAINER_NAME=") {
		t.Errorf("the workload got the container's identity:\n%s", envOut)
	}
	if !strings.Contains(envOut, "LOCKEX_POD_NAME=") {
		t.Errorf("the workload lost LOCKEX_POD_NAME, which is not lockex's own:\n%s", envOut)
	}
	own := r.nodesOf(pod)
	if len(own) != 1 {
		t.Fatalf("the outer lockex's nodes: %+v, want one", own)
	}
	eventually(t, 20*time.Second, "the nested lockex queued, or took over", func() bool {
		return len(r.nodes()) == 2 || !r.exists(own[0].path) || r.running("nested")
	})
	if !r.exists(own[0].path) || r.running("nested") {
		t.Errorf("the nested lockex took over its parent's node %s: %+v", own[0].path, r.nodes())
	}
	stopAndLog(t, outer, pid1Mode)
}
