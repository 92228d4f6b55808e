package bench

import (
	"fmt"
	"syscall"
	"time"
)

// herdSettle is how long after a handoff the bench waits before reading
// the counters, so the new holder's watch on its own node (set just after
// it took the lock) falls inside the handoff's window.
const herdSettle = 50 * time.Millisecond

// herdResult is one herd size's figures, per handoff.
type herdResult struct {
	waiters                  int
	watching                 int // wchs total with every waiter queued
	packets, senders, writes summary
	fired, registered        summary
	handoff                  summary
}

// measureHerd queues n waiters behind a holder and hands the lock down
// several times, reading ZooKeeper's counters around each handoff.
func (b *bench) measureHerd() {
	b.section("Herd: n waiting contenders, ZooKeeper's work per handoff")
	for _, n := range herdSizes {
		b.r.herd = append(b.r.herd, b.herd(n, min(20, n/2)))
	}
}

func (b *bench) herd(n, handoffs int) herdResult {
	id := fmt.Sprintf("bench-herd-%d", n)
	args := b.holdArgs(id, "--session-timeout", herdSession.String())
	// Which waiter is next is the server's business: whoever starts its
	// workload next is the new holder.
	started := make(chan *lockex, n+1)
	onEvent := func(l *lockex, ev event) {
		if ev.msg == "workload started" {
			started <- l
		}
	}
	all := make([]*lockex, 0, n+1)
	for range n + 1 {
		all = append(all, b.run(args, holdEnv, onEvent))
	}
	holder := b.next(started, 2*time.Minute)
	for _, l := range all {
		if l != holder {
			l.need("waiting for the lock", 2*time.Minute)
		}
	}
	time.Sleep(time.Second) // every waiter's exists has been answered

	r := herdResult{waiters: n, watching: b.totalWatches()}
	cost := b.readingCost()

	var packets, senders, writes, fired, registered []float64
	var latency []time.Duration
	for range handoffs {
		r0 := b.read()
		holder.release()
		next := b.next(started, time.Minute)
		exited := holder.needExit(30 * time.Second)
		ev, _ := next.find("workload started")
		holder.end(30 * time.Second)
		time.Sleep(herdSettle)
		r1 := b.read()
		p, sent, w := b.work(r0, r1, cost)
		packets, senders, writes = append(packets, p), append(senders, float64(sent)), append(writes, w)
		f := r1.m.watchesFired() - r0.m.watchesFired()
		fired = append(fired, f)
		registered = append(registered, r1.m["zk_watch_count"]-r0.m["zk_watch_count"]+f)
		latency = append(latency, ev.at.Sub(exited))
		holder = next
	}
	r.packets, r.senders, r.writes = summarize(packets), summarize(senders), summarize(writes)
	r.fired, r.registered = summarize(fired), summarize(registered)
	r.handoff = summarize(secs(latency))

	// Everyone left goes at once: waiters stop on SIGTERM and delete their
	// nodes, the holder's workload ends.
	for _, l := range all {
		if l != holder {
			_ = l.cmd.Process.Signal(syscall.SIGTERM)
		}
	}
	holder.release()
	for _, l := range all {
		l.end(time.Minute)
	}

	// The method is the same for every size: say it once.
	how := func(text string) string {
		if n == herdSizes[0] {
			return text
		}
		return ""
	}
	packetsHow := fmt.Sprintf("%d lockex on lock `%s` with `--session-timeout 20s`, one holding, %d waiting. `zk_packets_received` from `mntr` before and after each of %d handoffs (from the bench ending the holder's workload until the next's has started, the old lockex has exited, and %s more), less what the readings add (%.0f packets: `cons`, `mntr`, `srvr`) and less the pings in the window: for each session in `cons` before and after, its packets (`recved`) less its requests (the growth of `lcxid`, the last request's xid, which pings do not have). The larger herds the same, with min(20, n/2) handoffs.",
		n+1, id, n, handoffs, herdSettle, cost)
	rtt := b.r.rtt.median
	b.add(figure{name: fmt.Sprintf("n=%d: packets received per handoff", n), unit: count, values: packets, how: how(packetsHow)})
	b.add(figure{name: fmt.Sprintf("n=%d: sessions that sent requests per handoff", n), unit: count, values: senders,
		how: how("Sessions whose `lcxid` moved over the window (pings excluded), plus those that closed in it (the old holder).")})
	b.add(figure{name: fmt.Sprintf("n=%d: writes per handoff", n), unit: count, values: writes,
		how: how("Growth of the server's last zxid (`srvr`) over the window: one per write.")})
	b.add(figure{name: fmt.Sprintf("n=%d: watches fired per handoff", n), unit: count, values: fired,
		how: how("The growth of the sums of `zk_{node_created,node_deleted,node_changed,node_children}_watch_count` from `mntr` (one count per watcher a change notified) over the same windows.")})
	b.add(figure{name: fmt.Sprintf("n=%d: watches registered per handoff", n), unit: count, values: registered,
		how: how("Change of `zk_watch_count` over the window plus the watches that fired (a watch fires once, then is gone): the watches set anew.")})
	b.add(figure{name: fmt.Sprintf("n=%d: watches held while all wait (wchs)", n), unit: count, values: []float64{float64(r.watching)},
		how: how("`wchs` \"Total watches\" with the holder and every waiter queued, before the handoffs.")})
	b.add(figure{name: fmt.Sprintf("n=%d: handoff", n), unit: seconds, values: secs(latency), limit: fmtRT(secs(latency), rtt),
		how: how("As the graceful handoff above, with the herd waiting.")})
	return r
}

// next returns the lockex whose workload starts next.
func (b *bench) next(started <-chan *lockex, d time.Duration) *lockex {
	b.t.Helper()
	select {
	case l := <-started:
		return l
	case <-time.After(d):
		b.t.Fatalf("no workload started within %s", d)
		return nil
	}
}
