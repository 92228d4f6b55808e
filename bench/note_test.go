package bench

import (
	"fmt"
	"os/exec"
	"strings"
)

// closingNote lists the figures against their limits and, for each one far
// above its limit, says why, from the measured breakdown, and what would
// bring it down. The reasons name the steps of lockex's recipes as they are
// written today (internal/zklock, internal/proc): revisit them when those
// change.
func (b *bench) closingNote() string {
	r := b.r
	rtt := r.rtt.median
	var s strings.Builder
	fmt.Fprintf(&s, "The figures, by median (one round trip = a hot getData, %s):\n\n", formatDuration(rtt))
	fmt.Fprintf(&s, "- ZooKeeper: round trip %s hot, %s after 20ms idle (%.1f round trips); ephemeral sequential create + delete %s (%.1f); bare handoff between two sessions, delete → watch fired, %s (%.1f).\n",
		formatDuration(rtt), formatDuration(r.coldRTT.median), r.coldRTT.median/rtt,
		formatDuration(r.createDelete.median), r.createDelete.median/rtt, formatDuration(r.bare.median), r.bare.median/rtt)
	fmt.Fprintf(&s, "- `lockex -- true`: %s wall against %s for `/bin/true`; after the process started, connect + lock + exec take %s (%.1f round trips); %.0f requests and %.0f writes per run.\n",
		formatDuration(r.startWall.median), formatDuration(r.trueWall.median), formatDuration(r.startAfter.median), r.startAfter.median/rtt,
		r.startPackets.median, r.startWrites.median)
	fmt.Fprintf(&s, "- Graceful handoff: %s, %.1f round trips (limit %.0f): %s. Against its floor, the bare handoff plus a fork and exec (%s + %s = %s, this run): %.2f× (goal %.0f×): %s.\n",
		formatDuration(r.handoff.median), r.handoffRT.median, handoffLimitRT, verdict(r.handoffRT.median <= handoffLimitRT),
		formatDuration(r.bare.median), formatDuration(r.forkExec.median), formatDuration(r.floor),
		r.handoff.median/r.floor, handoffFloorGoal, verdict(r.handoff.median/r.floor <= handoffFloorGoal))
	fmt.Fprintf(&s, "  The handoff is timed from the workload's exit (its pidfd readable in the bench). Timed from its last output instead, as reports before 2026-12-03 did, it is %s, %.2f× the floor: the difference is the workload's own exit, %s in these handoffs (%s for the same helper without lockex), which no lock can shorten and the floor leaves out.\n",
		formatDuration(r.sinceOutput.median), r.sinceOutputFloor.median, formatDuration(r.ownExit.median), formatDuration(r.workloadExit.median))
	if r.ensembleFloor > 0 {
		fmt.Fprintf(&s, "- Graceful handoff on a 3-member ensemble, the waiter on another member than the holder: %s against a floor of %s: %.2f× (goal %.0f×): %s.\n",
			formatDuration(r.ensembleHandoff.median), formatDuration(r.ensembleFloor), r.ensembleHandoff.median/r.ensembleFloor,
			handoffFloorGoal, verdict(r.ensembleHandoff.median/r.ensembleFloor <= handoffFloorGoal))
	}
	fmt.Fprintf(&s, "- Crash takeover: %s, %.2f× the %s session timeout (limit %.1f×): %s.\n",
		formatDuration(r.takeover.median), r.takeoverRatio.median, r.granted, takeoverLimit, verdict(r.takeoverRatio.median <= takeoverLimit))
	fmt.Fprintf(&s, "- Crash-restart in the same container (PID 1 with its pod UID and container name): %s from the kill to the next workload's start, against %s (%.2f× the session timeout) for the same restart without the identity.\n",
		formatDuration(r.restart.median), formatDuration(r.restartBare.median), r.restartBareRatio.median)
	fmt.Fprintf(&s, "- Herd with %s waiters, per handoff: %s packets received, %s sessions sending requests, %s watches fired, %s registered; %s watches held while all wait: %s.\n",
		join(herdSizes, func(n int) string { return fmt.Sprint(n) }),
		join(r.herd, func(h herdResult) string { return fmt.Sprintf("%.1f", h.packets.median) }),
		join(r.herd, func(h herdResult) string { return fmt.Sprintf("%.0f", h.senders.median) }),
		join(r.herd, func(h herdResult) string { return fmt.Sprintf("%.0f", h.fired.median) }),
		join(r.herd, func(h herdResult) string { return fmt.Sprintf("%.0f", h.registered.median) }),
		join(r.herd, func(h herdResult) string { return fmt.Sprint(h.watching) }),
		growVerdict(!b.herdGrows()))
	fmt.Fprintf(&s, "- Semaphore of %d with %d contenders and a %s workload: %.0f leases/s (the workload alone would allow %.0f/s); one grant every %s (%.1f round trips), since lease taking is serialised by the semaphore's `-__lock__` mutex.\n",
		semaphoreSize, semaphoreContenders, semaphoreWork, r.leaseRate.median, float64(semaphoreSize)/semaphoreWork.Seconds(),
		formatDuration(r.leaseGap.median), r.leaseGap.median/rtt)
	fmt.Fprintf(&s, "- Footprint: peak RSS %.1f MiB (limit %.0f MiB): %s; %.0f ms of CPU per idle minute; stripped binary %.1f MiB (%d B; %d B before the Kubernetes mode, %+d B).\n",
		r.hwm.median, rssLimitMiB, verdict(r.hwm.median <= rssLimitMiB), r.cpu.median, float64(r.binSize)/(1<<20),
		r.binSize, r.binSizeBeforeKube, r.binSize-r.binSizeBeforeKube)

	if r.handoffRT.median > handoffLimitRT {
		b.handoffNote(&s)
	}
	if r.takeoverRatio.median > takeoverLimit {
		b.takeoverNote(&s)
	} else {
		fmt.Fprintf(&s, "\nThe takeover can come in under one session timeout (min %.2f×): the server expires a session one timeout after the last packet it got from it, rounded up to its 200ms tick, and the killed holder's last ping or lease check came before the kill.\n",
			r.takeoverRatio.min)
	}
	if b.herdGrows() {
		b.herdNote(&s)
	}
	if r.hwm.median > rssLimitMiB {
		fmt.Fprintf(&s, "\n**Peak RSS is %.1f MiB, above %.0f MiB.** Most of a Go program's resident memory at rest is its runtime, its heap's headroom (GOGC=100 lets the heap double before a collection) and the pages of its binary it has touched. What would bring it down: a lower GOGC or a GOMEMLIMIT set by lockex for itself, and not building the Prometheus registry and HTTP server when `--http-addr` is off.\n",
			r.hwm.median, rssLimitMiB)
	}
	return s.String()
}

// handoffNote explains a graceful handoff above three round trips from its
// measured legs, and sets it against its floor.
func (b *bench) handoffNote(s *strings.Builder) {
	r := b.r
	rtt := r.rtt.median
	p := r.handoffLegs
	fmt.Fprintf(s, "\n**Graceful handoff: %.1f round trips, above %.0f; %.2f× its floor.** The floor, %s, is what ZooKeeper and the kernel take here: the bare handoff (one session's delete until another's watch fires, no lock recipe, no processes), %s, because the delete is a synced write and every step wakes threads that were asleep (a round trip after 20ms idle is %s, %.1f hot ones), plus a fork and exec, %s. Three hot round trips are below it. Leg by leg (medians of the breakdown above):\n\n",
		r.handoffRT.median, handoffLimitRT, r.handoff.median/r.floor, formatDuration(r.floor), formatDuration(r.bare.median),
		formatDuration(r.coldRTT.median), r.coldRTT.median/rtt, formatDuration(r.forkExec.median))
	fmt.Fprintf(s, "1. %s (%.1f round trips): the workload's exit reaches lockex (its pidfd turns readable in Go's netpoller, SIGCHLD as the fallback), which reaps it, looks once for anything left under the lock (the process group, orphans, the cgroup's populated flag; here nothing, so nothing is signalled) and reports the exit.\n",
		formatDuration(p[0]), p[0]/rtt)
	fmt.Fprintf(s, "2. %s (%.1f): the holder deletes its node (the guardian was told to forget the group in that look; the empty cgroup is removed after the release): one write, which ZooKeeper syncs to its transaction log before it applies it and notifies the watchers; that much is the bare handoff's own work.\n",
		formatDuration(p[1]), p[1]/rtt)
	fmt.Fprintf(s, "3. %s (%.1f): the next contender's exists watch fires; it lists the lock's children and, in the same round trip, asks exists on its own node (still its session's, and the fencing token). Its first write (the beat that confirms evidence of its session) goes out beside the workload's start when the evidence it has is young; after a long wait it comes first.\n",
		formatDuration(p[2]), p[2]/rtt)
	fmt.Fprintf(s, "4. %s (%.1f): lockex reports the lock, then starts the workload: it makes the workload's cgroup where lockex can, tells the guardian (started while lockex waited), then forks and execs it. On this machine the previous holder's exit (its session's close, its guardian's exit) competes for the same CPUs.\n\n",
		formatDuration(p[3]), p[3]/rtt)
	fmt.Fprintf(s, "What would bring it down further:\n\n")
	fmt.Fprintf(s, "- Leg 1: the one look before the release is a wait4, a kill(-pgid, 0) and two reads of the cgroup's events; what is left is goroutine and thread wake-ups (the pidfd's, the supervisor's), each a few tens of microseconds, more on a loaded machine.\n")
	fmt.Fprintf(s, "- Leg 4: the workload's cgroup could be made while lockex waits, which takes a mkdir off this leg.\n")
	fmt.Fprintf(s, "- Leg 3: the listing could be skipped when the last one showed the predecessor as the only contender ahead (sequence numbers only grow), but kazoo's string order breaks at the counter's wrap, where the listing is what keeps a third holder out; it stays.\n")
	fmt.Fprintf(s, "- Leg 2 and the watch in leg 3 are ZooKeeper's own (the bare handoff): faster storage for its transaction log lowers them; `forceSync=no` too, at the price of durability.\n")
}

// takeoverNote explains a crash takeover above 1.1 session timeouts.
func (b *bench) takeoverNote(s *strings.Builder) {
	r := b.r
	fmt.Fprintf(s, "\n**Crash takeover: %.2f× the session timeout, above %.1f×.** The next contender cannot start before the server expires the dead session: one session timeout after the last packet it got, rounded up to the server's tick (200ms here), then the watch and a handoff's own round trips. More than that is the server's expiry thread or the waiter's process running late on a loaded machine (compare the load averages above). What would bring it down: a shorter tick (expiry is checked once per tick), and the same cuts as for the handoff, which are a small part of it.\n",
		r.takeoverRatio.median, takeoverLimit)
}

// herdNote explains packets or watches per handoff that grow with waiters.
func (b *bench) herdNote(s *strings.Builder) {
	h := b.r.herd
	first, last := h[0], h[len(h)-1]
	fmt.Fprintf(s, "\n**Herd: the work per handoff grows with the waiters** (%.1f packets and %.0f watches fired at %d waiters, %.1f and %.0f at %d). lockex's waiters each watch only their predecessor, so a handoff should wake one waiter; the sessions sending requests per handoff (%.0f at %d waiters, %.0f at %d) tell whether more were woken (a herd) or whether the growth is pings that fell in the windows. If more woke, look for a watch on the lock's children or on a node other than the predecessor; if not, longer windows or more handoffs bring the noise down.\n",
		first.packets.median, first.fired.median, first.waiters, last.packets.median, last.fired.median, last.waiters,
		first.senders.median, first.waiters, last.senders.median, last.waiters)
}

func verdict(within bool) string {
	if within {
		return "within it"
	}
	return "above it, see below"
}

func growVerdict(flat bool) string {
	if flat {
		return "they do not grow with the waiters"
	}
	return "they grow with the waiters, see below"
}

// herdGrows reports whether the packets or watches fired per handoff grow
// with the waiters by more than herdGrowthAllowed from the smallest herd to
// the largest.
func (b *bench) herdGrows() bool {
	h := b.r.herd
	if len(h) < 2 {
		return false
	}
	first, last := h[0], h[len(h)-1]
	return last.packets.median-first.packets.median > herdGrowthAllowed ||
		last.fired.median-first.fired.median > herdGrowthAllowed
}

func join[T any](xs []T, f func(T) string) string {
	out := make([]string, len(xs))
	for i, x := range xs {
		out[i] = f(x)
	}
	return strings.Join(out, "/")
}

func execOutput(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).Output()
	return string(out), err
}
