package bench

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"syscall"
	"time"

	"github.com/go-zookeeper/zk"
	"golang.org/x/sys/unix"

	"github.com/lockex/lockex/internal/zktest"
)

// watchSettle is how long the bench lets a new waiter set its watch after
// it logged `waiting for the lock` (which it logs just before it sends the
// exists): the handoff is then the ordinary one, by the watch.
const watchSettle = 100 * time.Millisecond

// holdArgs are lockex's arguments for a contender on lock id whose
// workload holds until the bench closes its stdin.
func (b *bench) holdArgs(id string, extra ...string) []string {
	return b.holdArgsAt(b.addr, id, extra...)
}

// holdArgsAt is holdArgs for a contender connected to the server at addr.
func (b *bench) holdArgsAt(addr, id string, extra ...string) []string {
	args := append([]string{"-z", addr, "-i", id, "--log-format", "json"}, extra...)
	return append(args, "--", b.helper)
}

var holdEnv = []string{helperEnv + "=hold"}

// queueBehind starts a contender on the same lock and returns once it
// waits (with its watch set) behind the current holder.
func (b *bench) queueBehind(args []string) *lockex {
	next := b.run(args, holdEnv, nil)
	next.need("waiting for the lock", 30*time.Second)
	time.Sleep(watchSettle)
	return next
}

// handoffs are one chain's handoffs, each split into legs: from the
// workload's exit to the holder's `workload exited`, to a watch of the
// bench's own on the holder's node firing (the delete, committed and
// notified), to the next's `lock acquired`, to its `workload started`.
// released is the holder's `lock released` (its delete answered), from
// its `workload exited`: it overlaps the next leg.
type handoffs struct {
	total, reap, deleted, acquire, fork, released []time.Duration
	// sinceOutput is the handoff from the workload's last output (its
	// clock, printed just before it exits), and ownExit that output to
	// its exit: the workload's own part, which no lock can shorten.
	sinceOutput, ownExit []time.Duration
}

func (h handoffs) legMedians() [4]float64 {
	return [4]float64{
		summarize(secs(h.reap)).median, summarize(secs(h.deleted)).median,
		summarize(secs(h.acquire)).median, summarize(secs(h.fork)).median,
	}
}

// handoffChain passes lock id down a chain of contenders: each holds until
// the bench ends its workload, while the next waits. Contender k connects
// to addrs[k mod len(addrs)], so with more than one address the waiter is
// on another server than the holder; watchers[k mod len(watchers)] is a
// session of the bench's on the same server as contender k, whose watch
// on the holder's node times the delete as the waiter's server tells it.
func (b *bench) handoffChain(id string, addrs []string, watchers []*zk.Conn, runs int) handoffs {
	var h handoffs
	k := 0
	holder := b.run(b.holdArgsAt(addrs[0], id), holdEnv, nil)
	holder.need("workload started", 30*time.Second)
	for i := -warmups; i < runs; i++ {
		k++
		next := b.queueBehind(b.holdArgsAt(addrs[k%len(addrs)], id))
		acquiredBefore := holder.need("lock acquired", time.Second)
		node, _ := acquiredBefore.attrs["node"].(string)
		watcher := watchers[k%len(watchers)]
		ok, _, watch, err := watcher.ExistsW(node)
		if err != nil || !ok {
			b.t.Fatalf("exists %q: %v %v", node, ok, err)
		}
		fired := make(chan time.Time, 1)
		go func() {
			// The holder's beats write its node (its first may come
			// after "lock acquired"): each fires the watch, which is set
			// again, until the delete.
			for {
				ev := <-watch
				now := time.Now()
				if ev.Type == zk.EventNodeDataChanged {
					ok, _, w, err := watcher.ExistsW(node)
					if err == nil && ok {
						watch = w
						continue
					}
					if err == nil {
						// Deleted while the watch was set again: it is
						// gone by the answer, the nearest time there is.
						fired <- time.Now()
						return
					}
				}
				if ev.Type != zk.EventNodeDeleted {
					now = time.Time{}
				}
				fired <- now
				return
			}
		}()
		exitSeen := b.watchExit(holder)
		holder.release()
		printed := holder.needExit(30 * time.Second)
		started := next.need("workload started", 30*time.Second)
		holder.end(30 * time.Second)
		var exited time.Time
		select {
		case exited = <-exitSeen:
		case <-time.After(10 * time.Second):
			b.t.Fatal("the bench's pidfd did not report the holder workload's exit")
		}
		var deletedAt time.Time
		select {
		case deletedAt = <-fired:
		case <-time.After(10 * time.Second):
		}
		if deletedAt.IsZero() {
			b.t.Fatalf("the bench's watch on %s did not report its deletion", node)
		}
		seen, _ := holder.find("workload exited")
		if seen.at.Before(exited) {
			// The bench's thread woke after lockex had seen the exit and
			// logged it (a loaded machine): the exit came before either.
			exited = seen.at
		}
		released, _ := holder.find("lock released")
		acquired, _ := next.find("lock acquired")
		if i >= 0 {
			h.total = append(h.total, started.at.Sub(exited))
			h.sinceOutput = append(h.sinceOutput, started.at.Sub(printed))
			h.ownExit = append(h.ownExit, exited.Sub(printed))
			h.reap = append(h.reap, seen.at.Sub(exited))
			h.deleted = append(h.deleted, deletedAt.Sub(seen.at))
			h.acquire = append(h.acquire, acquired.at.Sub(deletedAt))
			h.fork = append(h.fork, started.at.Sub(acquired.at))
			h.released = append(h.released, released.at.Sub(seen.at))
		}
		holder = next
	}
	holder.release()
	holder.end(30 * time.Second)
	return h
}

// watchExit returns where the time will arrive at which the holder's
// workload exited: its pidfd, opened by the bench (pidfd_open needs no
// parent), turns readable once the workload is a zombie, when its exit is
// done and lockex can learn of it. A thread of its own waits in poll, so
// that the wake-up is the kernel's alone, as lockex's own is. Should that
// thread run late, the holder's `workload exited` bounds the time: the
// chain takes the earlier of the two.
func (b *bench) watchExit(holder *lockex) <-chan time.Time {
	ev, ok := holder.find("workload started")
	pid, _ := ev.attrs["pid"].(float64)
	if !ok || pid <= 1 {
		b.t.Fatalf("no workload pid in the holder's log: %v", ev.attrs)
	}
	fd, err := unix.PidfdOpen(int(pid), 0)
	if err != nil {
		b.t.Fatalf("pidfd_open of the holder's workload %d: %v", int(pid), err)
	}
	seen := make(chan time.Time, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		defer unix.Close(fd)
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		for {
			if _, err := unix.Poll(fds, -1); err != unix.EINTR {
				break
			}
		}
		seen <- time.Now()
	}()
	return seen
}

// floorHow says how a handoff's floor is made up.
const floorHow = "The sum of two medians of this run: the bare handoff (delete → watcher notified, above) and the bench's own fork + exec. No lock built on ZooKeeper can hand over faster, and the next workload still has to be started."

// measureHandoff passes one lock down a chain of contenders on the
// standalone server, and sets the handoff against its floor.
func (b *bench) measureHandoff() {
	b.section("Graceful handoff: holder's workload exits → next workload starts")
	h := b.handoffChain("bench-handoff", []string{b.addr}, []*zk.Conn{b.peer}, handoffRuns)

	rtt := b.r.rtt.median
	floor := b.r.bare.median + b.r.forkExec.median
	b.r.floor = floor
	b.r.handoff = b.add(figure{name: "handoff", unit: seconds, values: secs(h.total), limit: fmtRT(secs(h.total), rtt),
		how: "Two lockex on lock `bench-handoff` (default flags), the second waiting (its watch set) behind the first. The bench closes the holder workload's stdin; the workload (this test binary as a helper) prints its clock and exits. From its exit, the moment a pidfd the bench holds on it turns readable (the workload is a zombie: lockex can learn of the exit from then on), to the next lockex's `workload started` log line (after its `execve` succeeded). The chain then goes on with a new waiter."}).summary()
	b.add(figure{name: "floor: bare handoff + fork/exec", unit: seconds, values: []float64{floor}, how: floorHow})
	b.r.handoffFloor = b.add(figure{name: "handoff / floor", unit: ratio, values: scaled(secs(h.total), floor),
		limit: fmt.Sprintf("goal ≤ %.0f×", handoffFloorGoal),
		how:   "Each handoff divided by the floor."}).summary()
	b.r.handoffRT = b.add(figure{name: "handoff in round trips", unit: ratio, values: scaled(secs(h.total), rtt),
		how: "Each handoff divided by the median getData round trip."}).summary()
	b.r.sinceOutput = b.add(figure{name: "handoff from the workload's last output", unit: seconds, values: secs(h.sinceOutput),
		how: "The same handoffs from the clock the workload printed just before it exited (how earlier reports timed the handoff): the workload's own exit, below, is part of it."}).summary()
	b.r.sinceOutputFloor = b.add(figure{name: "handoff from the workload's last output / floor", unit: ratio, values: scaled(secs(h.sinceOutput), floor),
		how: "Each divided by the floor."}).summary()
	b.r.ownExit = b.add(figure{name: "the workload's own exit: its last output → its exit", unit: seconds, values: secs(h.ownExit),
		how: "In the same handoffs, from the workload's clock to its pidfd turning readable: the kernel tearing down a Go process, before lockex can learn anything. It depends on the workload, not on lockex."}).summary()
	b.r.handoffLegs = h.legMedians()
	b.addLegs(h)
}

// addLegs adds a chain's breakdown.
func (b *bench) addLegs(h handoffs) {
	b.add(figure{name: "  workload exit → holder logs its exit", unit: seconds, values: secs(h.reap),
		how: "From the workload's exit (its pidfd readable in the bench) to the holder's `workload exited`: the exit reaches lockex, which reaps it and finds nothing else left under the lock."})
	b.add(figure{name: "  → holder's node deleted (a watch of the bench fires)", unit: seconds, values: secs(h.deleted),
		how: "To the moment a watch the bench set on the holder's node, from a session on the waiter's server, reports its deletion: the holder sends its delete, the server commits it and notifies the watchers, the waiter's among them."})
	b.add(figure{name: "  → next holds the lock", unit: seconds, values: secs(h.acquire),
		how: "To the next's `lock acquired`: its watch fires, then its recipe round (see the closing note for its requests)."})
	b.add(figure{name: "  → next workload started", unit: seconds, values: secs(h.fork),
		how: "To the next's `workload started`: what lockex does before the fork, then fork and exec."})
	b.add(figure{name: "  (holder's exit logged → its delete answered)", unit: seconds, values: secs(h.released),
		how: "To the holder's `lock released`, logged once its delete was answered; it overlaps the two legs after the exit."})
}

// measureEnsembleHandoff starts a 3-member ensemble and passes a lock down
// a chain whose waiter is always on another member than its holder: the
// delete goes through the leader, and the waiter hears of it from its own
// member once that member has applied it. The floor is the bare handoff
// between two sessions on different members, plus fork and exec. The
// ensemble is stopped again at the end.
func (b *bench) measureEnsembleHandoff() {
	b.section("Graceful handoff on a 3-member ensemble, the waiter on another member than the holder")
	ens := zktest.StartEnsemble(b.t, 3, zktest.SessionTimeouts(400*time.Millisecond, 20*time.Second))
	defer func() {
		for _, s := range ens.Servers {
			_ = s.Kill()
		}
	}()
	var addrs []string
	var conns []*zk.Conn
	for _, s := range ens.Servers {
		addrs = append(addrs, s.Addr())
		conns = append(conns, b.sessionAt(s.Addr()))
	}
	bare := b.bareHandoffsBetween(conns, "/bench-ensemble")
	h := b.handoffChain("bench-ensemble-handoff", addrs, conns, ensembleRuns)

	leader, _ := ens.Leader()
	leaderID := 0
	if leader != nil {
		leaderID = leader.ID()
	}
	bareSum := b.add(figure{name: "bare handoff: delete → watcher notified, another member", unit: seconds, values: secs(bare),
		how: "As the bare handoff on the standalone server, but the deleting session and the watching one are on different members (every pair in turn)."}).summary()
	floor := bareSum.median + b.r.forkExec.median
	b.r.ensembleFloor = floor
	b.r.ensembleHandoff = b.add(figure{name: "handoff", unit: seconds, values: secs(h.total),
		how: fmt.Sprintf("As the graceful handoff above (lock `bench-ensemble-handoff`, default flags), on an ensemble of 3 (tickTime 200ms, leader: member %d): contender k is connected to member k mod 3, so every waiter is on another member than the holder it follows.", leaderID)}).summary()
	b.add(figure{name: "floor: bare handoff (another member) + fork/exec", unit: seconds, values: []float64{floor}, how: floorHow})
	b.r.ensembleRatio = b.add(figure{name: "handoff / floor", unit: ratio, values: scaled(secs(h.total), floor),
		limit: fmt.Sprintf("goal ≤ %.0f×", handoffFloorGoal), how: "Each handoff divided by the floor."}).summary()
	b.addLegs(h)
}

// sessionAt opens a session of the bench's own to the server at addr.
func (b *bench) sessionAt(addr string) *zk.Conn {
	conn, _, err := zk.Connect([]string{addr}, 10*time.Second, zk.WithLogInfo(false), zk.WithLogger(quiet{}))
	if err != nil {
		b.t.Fatal(err)
	}
	b.t.Cleanup(conn.Close)
	if _, _, err := conn.Exists("/"); err != nil {
		b.t.Fatal(err)
	}
	return conn
}

// bareHandoffsBetween is bareHandoffs with the deleting and the watching
// session on different servers: conns[i] deletes, conns[i+1] watches.
func (b *bench) bareHandoffsBetween(conns []*zk.Conn, dir string) []time.Duration {
	if _, err := conns[0].Create(dir, nil, 0, zk.WorldACL(zk.PermAll)); err != nil && err != zk.ErrNodeExists {
		b.t.Fatal(err)
	}
	out := make([]time.Duration, 0, coldRuns)
	for i := -warmups * 10; i < coldRuns; i++ {
		del, watcher := conns[(i+len(conns)*100)%len(conns)], conns[(i+1+len(conns)*100)%len(conns)]
		p, err := del.Create(dir+"/h-", []byte("host:1"), zk.FlagEphemeral|zk.FlagSequence, zk.WorldACL(zk.PermAll))
		if err != nil {
			b.t.Fatal(err)
		}
		// The watcher's member may not have applied the create yet.
		if _, err := watcher.Sync(p); err != nil {
			b.t.Fatal(err)
		}
		ok, _, watch, err := watcher.ExistsW(p)
		if err != nil || !ok {
			b.t.Fatalf("exists %s: %v %v", p, ok, err)
		}
		time.Sleep(coldIdle)
		start := time.Now()
		if err := del.Delete(p, -1); err != nil {
			b.t.Fatal(err)
		}
		select {
		case ev := <-watch:
			if ev.Type != zk.EventNodeDeleted {
				b.t.Fatalf("watch on %s: %v", p, ev)
			}
		case <-time.After(10 * time.Second):
			b.t.Fatalf("no watch event for %s", p)
		}
		if i >= 0 {
			out = append(out, time.Since(start))
		}
	}
	return out
}

// measureTakeover passes a lock down a chain by SIGKILLing each holder's
// lockex: the next takes over once the server expires the dead session.
func (b *bench) measureTakeover() {
	b.section("Crash takeover: holder's lockex SIGKILLed → next workload starts")
	args := b.holdArgs("bench-takeover", "--session-timeout", takeoverSession.String(), "--kill-grace", takeoverGrace.String())
	holder := b.run(args, holdEnv, nil)
	holder.need("workload started", 30*time.Second)
	var total, acquire []time.Duration
	var ratios []float64
	for i := 0; i < takeoverRuns; i++ {
		next := b.queueBehind(args)
		// A random moment within a ping interval: how long before the kill
		// the dead session last spoke decides how soon it expires.
		time.Sleep(rand.N(takeoverSession / 3))
		killed := time.Now()
		if err := syscall.Kill(holder.pid(), syscall.SIGKILL); err != nil {
			b.t.Fatal(err)
		}
		started := next.need("workload started", 30*time.Second)
		connected := next.need("connected to zookeeper", time.Second)
		acquired, _ := next.find("lock acquired")
		granted := takeoverSession
		if ns, ok := connected.attrs["session_timeout"].(float64); ok {
			granted = time.Duration(ns)
		}
		b.r.granted = granted
		holder.end(30 * time.Second)
		total = append(total, started.at.Sub(killed))
		acquire = append(acquire, started.at.Sub(acquired.at))
		ratios = append(ratios, started.at.Sub(killed).Seconds()/granted.Seconds())
		holder = next
	}
	holder.release()
	holder.end(30 * time.Second)

	b.r.takeover = b.add(figure{name: "takeover", unit: seconds, values: secs(total),
		how: "Two lockex on lock `bench-takeover` with `--session-timeout 2s --kill-grace 500ms`, the second waiting behind the first. After a random pause of up to a third of the session timeout (a ping interval), the bench SIGKILLs the holder's lockex (its workload dies with it). From just before the kill to the next's `workload started`."}).summary()
	b.r.takeoverRatio = b.add(figure{name: "takeover / session timeout", unit: ratio, values: ratios,
		how: "Each takeover divided by the session timeout the server granted (from the next's `connected to zookeeper` line)."}).summary()
	b.add(figure{name: "  of which: lock acquired → workload started", unit: seconds, values: secs(acquire),
		how: "The next's own part after the lock was its: fork and exec."})
}
