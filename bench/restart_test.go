package bench

import (
	"crypto/rand"
	"fmt"
	mathrand "math/rand/v2"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// takeoverMsg is the restarted lockex's log line for each node of its dead
// earlier incarnation it deleted (docs/design.md §3.4).
const takeoverMsg = "deleted the node of this container's earlier incarnation, which is dead; the next in line need not wait for its session to expire"

// runContainer starts lockex as PID 1 of a new PID namespace, as a
// container's entrypoint: killing it kills everything in the namespace.
func (b *bench) runContainer(args, env []string) *lockex {
	b.t.Helper()
	argv := append([]string{"unshare", "--pid", "--fork", "--mount-proc", "--kill-child", b.bin}, args...)
	l, err := b.startArgv(argv, env, nil)
	if err != nil {
		b.t.Fatalf("starting lockex in a PID namespace (unshare, as root): %v", err)
	}
	return l
}

// pid1 is the host pid of the lockex that runContainer's unshare forked.
func (l *lockex) pid1() int {
	l.t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", l.pid(), l.pid()))
	kids := strings.Fields(string(b))
	if err != nil || len(kids) != 1 {
		l.t.Fatalf("unshare %d has children %q (%v), want lockex alone", l.pid(), kids, err)
	}
	pid, _ := strconv.Atoi(kids[0])
	return pid
}

// containerEnv is what the chart gives lockex about its container: a pod
// UID of its own for each run, so runs never take over from each other.
func containerEnv() []string {
	var u [16]byte
	rand.Read(u[:])
	uid := fmt.Sprintf("%x-%x-%x-%x-%x", u[:4], u[4:6], u[6:8], u[8:10], u[10:])
	return []string{"LOCKEX_POD_UID=" + uid, "LOCKEX_CONTAINER_NAME=app", "LOCKEX_POD_NAMESPACE=bench", "LOCKEX_POD_NAME=bench-0"}
}

// restarts are one way's crash-restarts: from the kill to the next's
// workload start; from the restart's spawn to it; from the restarted
// lockex's deletion to it (with the identity only); and the first divided
// by the granted session timeout.
type restarts struct {
	total, afterRestart, afterDelete []time.Duration
	ratios                           []float64
}

// crashRestarts kills a holding container's lockex (PID 1) with its
// namespace while another lockex waits, and starts the container again at
// once, as a restart policy does, with the container's identity or without.
func (b *bench) crashRestarts(identity bool) restarts {
	var r restarts
	for i := -warmups; i < restartRuns; i++ {
		// A lock of its own per run: the restarted lockex queues behind
		// the new holder, and is stopped at the end of its run.
		id := fmt.Sprintf("bench-restart-%t-%d", identity, i)
		args := b.holdArgs(id, "--session-timeout", takeoverSession.String(), "--kill-grace", takeoverGrace.String())
		env := holdEnv
		if identity {
			env = append(containerEnv(), holdEnv...)
		}
		holder := b.runContainer(args, env)
		holder.need("workload started", 30*time.Second)
		next := b.queueBehind(args)
		// A random moment within a ping interval, as for the takeover.
		time.Sleep(mathrand.N(takeoverSession / 3))
		killed := time.Now()
		if err := syscall.Kill(holder.pid1(), syscall.SIGKILL); err != nil {
			b.t.Fatal(err)
		}
		// unshare exits once everything in the namespace is gone: the
		// runtime's cue to restart the container.
		holder.end(30 * time.Second)
		again := b.runContainer(args, env)
		started := next.need("workload started", 30*time.Second)
		connected := next.need("connected to zookeeper", time.Second)
		granted := takeoverSession
		if ns, ok := connected.attrs["session_timeout"].(float64); ok {
			granted = time.Duration(ns)
		}
		deleted, took := again.find(takeoverMsg)
		if took != identity {
			b.t.Fatalf("restarted lockex with identity %t: deleted its earlier node: %t; its log:\n%s", identity, took, again.log())
		}
		if i >= 0 {
			r.total = append(r.total, started.at.Sub(killed))
			r.afterRestart = append(r.afterRestart, started.at.Sub(again.spawned))
			if took {
				r.afterDelete = append(r.afterDelete, started.at.Sub(deleted.at))
			}
			r.ratios = append(r.ratios, started.at.Sub(killed).Seconds()/granted.Seconds())
		}
		// The restarted lockex waits behind the new holder: stopped, it
		// deletes its node and exits.
		again.need("waiting for the lock", 30*time.Second)
		if err := syscall.Kill(again.pid1(), syscall.SIGTERM); err != nil {
			b.t.Fatal(err)
		}
		again.end(30 * time.Second)
		next.release()
		next.end(30 * time.Second)
	}
	return r
}

// measureRestart sets the crash-restart takeover of a container that knows
// its identity (docs/design.md §3.4) against the same restart without it,
// which waits for the dead session to expire, as the crash takeover above.
func (b *bench) measureRestart() {
	b.section("Crash-restart in the same container: holder's PID 1 SIGKILLed, container started again → next workload starts")
	with, without := b.crashRestarts(true), b.crashRestarts(false)
	how := "Lock `bench-restart-*` (one per run), `--session-timeout 2s --kill-grace 500ms`. The holder's lockex runs as PID 1 of a PID namespace of its own (`unshare --pid --fork --mount-proc`), as a container's entrypoint, with the hold workload; a second lockex waits behind it. After a random pause of up to a third of the session timeout, the bench SIGKILLs the holder's lockex, which takes its namespace with it, waits for the namespace to be gone (the runtime's cue), and starts the same container again at once, as a restart policy would (podman's or the kubelet's own delay is not in it). From just before the kill to the next's `workload started`."
	b.r.restart = b.add(figure{name: "takeover, with the container's identity", unit: seconds, values: secs(with.total),
		how: how + " With identity: `LOCKEX_POD_UID` (a new one each run) and `LOCKEX_CONTAINER_NAME`, the same for both incarnations: the restarted lockex deletes the dead one's node."}).summary()
	b.add(figure{name: "  of which: restart spawned → next workload started", unit: seconds, values: secs(with.afterRestart),
		how: "From the bench's fork of the restarted container's unshare: its start, connect and takeover, and the next's handoff."})
	b.add(figure{name: "  of which: node deleted → next workload started", unit: seconds, values: secs(with.afterDelete),
		how: "From the restarted lockex's `deleted the node of this container's earlier incarnation` line: the next's watch, its round and its fork and exec."})
	b.r.restartBare = b.add(figure{name: "takeover, without it", unit: seconds, values: secs(without.total),
		how: "The same, with no pod identity: the next in line waits until the server expires the dead session."}).summary()
	b.r.restartBareRatio = b.add(figure{name: "  without it / session timeout", unit: ratio, values: without.ratios,
		how: "Each takeover without the identity divided by the granted session timeout."}).summary()
}
