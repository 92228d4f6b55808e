package bench

import (
	"os/exec"
	"time"
)

// measureStart times `lockex -- true` on a free lock from the fork to the
// reaping, and splits it by lockex's own log timestamps.
func (b *bench) measureStart() {
	b.section("Start-to-exec: `lockex -- true` on a free lock")
	args := []string{"-z", b.addr, "-i", "bench-start", "--log-format", "json", "--", "true"}
	var wall, startup, connect, lock, fork, tail, after []time.Duration
	var packets, writes []float64
	cost := b.readingCost()
	for i := -warmups; i < startRuns; i++ {
		r0 := b.read()
		l := b.run(args, nil, nil)
		l.end(30 * time.Second)
		r1 := b.read()
		if code := l.exitCode(); code != 0 {
			b.t.Fatalf("lockex -- true exited %d; its log:\n%s", code, l.log())
		}
		ev := func(msg string) time.Time {
			e, ok := l.find(msg)
			if !ok {
				b.t.Fatalf("lockex logged no %q; its log:\n%s", msg, l.log())
			}
			return e.at
		}
		connecting, connected, acquired, started := ev("connecting to zookeeper"), ev("connected to zookeeper"), ev("lock acquired"), ev("workload started")
		if i < 0 {
			continue
		}
		reaped := l.reapedAt()
		p, _, w := b.work(r0, r1, cost)
		packets, writes = append(packets, p), append(writes, w)
		wall = append(wall, reaped.Sub(l.spawned))
		startup = append(startup, connecting.Sub(l.spawned))
		connect = append(connect, connected.Sub(connecting))
		lock = append(lock, acquired.Sub(connected))
		fork = append(fork, started.Sub(acquired))
		tail = append(tail, reaped.Sub(started))
		after = append(after, started.Sub(connecting))
	}
	wallOf := func(name string, args ...string) []time.Duration {
		var out []time.Duration
		for i := -warmups; i < trueRuns; i++ {
			start := time.Now()
			if err := exec.Command(name, args...).Run(); err != nil {
				b.t.Fatalf("%s %q: %v", name, args, err)
			}
			if i >= 0 {
				out = append(out, time.Since(start))
			}
		}
		return out
	}
	trueWall, versionWall := wallOf("true"), wallOf(b.bin, "--version")
	rtt := b.r.rtt.median
	b.r.startWall = b.add(figure{name: "lockex -- true: wall", unit: seconds, values: secs(wall),
		how: "From just before the bench forks lockex to just after it reaps it: start-up, connect (a new session), lock, fork and exec of `true`, its exit, release, closing the session. Lock `bench-start`, free, its parent node already there (as for a cron job's second run)."}).summary()
	b.r.startAfter = b.add(figure{name: "  after process start: connect + lock + exec", unit: seconds, values: secs(after),
		limit: fmtRT(secs(after), rtt),
		how:   "lockex's own JSON log timestamps (nanoseconds, same clock as the bench): from `connecting to zookeeper`, its first line once the flags are read, to `workload started`, logged once `execve` of the workload has succeeded."}).summary()
	b.add(figure{name: "    process start (exec, Go runtime, flags)", unit: seconds, values: secs(startup),
		how: "From the fork to lockex's first log line."})
	b.add(figure{name: "    ZooKeeper connect (new session)", unit: seconds, values: secs(connect),
		limit: fmtRT(secs(connect), rtt),
		how:   "`connecting to zookeeper` to `connected to zookeeper`: TCP connect and the session handshake, which the server logs (a write) before answering."})
	b.add(figure{name: "    lock (free)", unit: seconds, values: secs(lock),
		limit: fmtRT(secs(lock), rtt),
		how:   "`connected to zookeeper` to `lock acquired`: the mutex recipe on a free lock (its requests are counted below)."})
	b.add(figure{name: "    fork + exec of the workload", unit: seconds, values: secs(fork),
		how: "`lock acquired` to `workload started`."})
	b.add(figure{name: "    after exec: exit, release, close", unit: seconds, values: secs(tail),
		how: "`workload started` to the bench reaping lockex: `true` runs and exits, lockex reaps it, deletes its node, closes the session and exits."})
	b.r.startPackets = b.add(figure{name: "  ZooKeeper packets per run", unit: count, values: packets,
		how: "`zk_packets_received` (`mntr`) before and after each run, less what the readings add and the other sessions' pings (see the herd below): every request of the run, connect and close included."}).summary()
	b.r.startWrites = b.add(figure{name: "  ZooKeeper writes per run", unit: count, values: writes,
		how: "Growth of the server's last zxid (`srvr`) over each run: session creation and close, the lock node's create and delete, and any create that failed (a failed write takes a zxid too)."}).summary()
	b.r.trueWall = b.add(figure{name: "/bin/true alone: wall", unit: seconds, values: secs(trueWall),
		how: "The same fork-to-reap timing of `true` run directly by the bench."}).summary()
	b.add(figure{name: "lockex --version: wall", unit: seconds, values: secs(versionWall),
		how: "The same for `lockex --version`: exec, the Go runtime's start, the flags, one line out. Set against the process start above, it shows what lockex sets up before its first log line."})
}
