package bench

import (
	"math/rand/v2"
	"syscall"
	"time"
)

// watchSettle is how long the bench lets a new waiter set its watch after
// it logged `waiting for the lock` (which it logs just before it sends the
// exists): the handoff is then the ordinary one, by the watch.
const watchSettle = 100 * time.Millisecond

// holdArgs are lockex's arguments for a contender on lock id whose
// workload holds until the bench closes its stdin.
func (b *bench) holdArgs(id string, extra ...string) []string {
	args := append([]string{"-z", b.addr, "-i", id, "--log-format", "json"}, extra...)
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

// measureHandoff passes one lock down a chain of contenders: each holds
// until the bench ends its workload, while the next waits.
func (b *bench) measureHandoff() {
	b.section("Graceful handoff: holder's workload exits → next workload starts")
	args := b.holdArgs("bench-handoff")
	holder := b.run(args, holdEnv, nil)
	holder.need("workload started", 30*time.Second)
	var total, reap, release, acquire, fork []time.Duration
	for i := -warmups; i < handoffRuns; i++ {
		next := b.queueBehind(args)
		holder.release()
		exited := holder.needExit(30 * time.Second)
		started := next.need("workload started", 30*time.Second)
		holder.end(30 * time.Second)
		seen, _ := holder.find("workload exited")
		released, _ := holder.find("lock released")
		acquired, _ := next.find("lock acquired")
		if i >= 0 {
			total = append(total, started.at.Sub(exited))
			reap = append(reap, seen.at.Sub(exited))
			release = append(release, released.at.Sub(seen.at))
			acquire = append(acquire, acquired.at.Sub(released.at))
			fork = append(fork, started.at.Sub(acquired.at))
		}
		holder = next
	}
	holder.release()
	holder.end(30 * time.Second)

	rtt := b.r.rtt.median
	b.r.handoff = b.add(figure{name: "handoff", unit: seconds, values: secs(total), limit: fmtRT(secs(total), rtt),
		how: "Two lockex on lock `bench-handoff` (default flags), the second waiting (its watch set) behind the first. The bench closes the holder workload's stdin; the workload (this test binary as a helper) prints its clock and exits. From that time to the next lockex's `workload started` log line (after its `execve` succeeded). The chain then goes on with a new waiter."}).summary()
	b.r.handoffRT = b.add(figure{name: "handoff in round trips", unit: ratio, values: scaled(secs(total), rtt),
		how: "Each handoff divided by the median getData round trip."}).summary()
	b.r.handoffLegs = [4]float64{
		summarize(secs(reap)).median, summarize(secs(release)).median,
		summarize(secs(acquire)).median, summarize(secs(fork)).median,
	}
	b.add(figure{name: "  workload exit → holder logs its exit", unit: seconds, values: secs(reap),
		how: "To the holder's `workload exited`: the workload's exit reaches lockex (SIGCHLD, wait4) and the process group is checked empty."})
	b.add(figure{name: "  → holder's delete answered", unit: seconds, values: secs(release),
		how: "To the holder's `lock released`, logged once its delete was answered: one write."})
	b.add(figure{name: "  → next holds the lock", unit: seconds, values: secs(acquire),
		how: "To the next's `lock acquired`: the watch fires (sent with the delete's answer, so this part can start before the previous ends), then its recipe round: list the children, check its own node's owner."})
	b.add(figure{name: "  → next workload started", unit: seconds, values: secs(fork),
		how: "To the next's `workload started`: fork and exec."})
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
