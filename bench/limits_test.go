package bench

import (
	"bufio"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/go-zookeeper/zk"
	"golang.org/x/sys/unix"
)

// measureLimits times what nothing built on ZooKeeper can beat: one round
// trip on an open session, from the same Go client lockex uses, hot (back
// to back) and cold (after an idle pause, as each step of a handoff is);
// one ephemeral sequential create plus its delete (two writes, each logged
// and synced to disk by the server before it answers); and a bare handoff
// between two sessions, and a fork + exec: together the floor under
// lockex's handoff.
func (b *bench) measureLimits() {
	b.section("The limit: ZooKeeper itself")
	const dir = "/bench-limits"
	if _, err := b.conn.Create(dir, []byte("lockex bench"), 0, zk.WorldACL(zk.PermAll)); err != nil && err != zk.ErrNodeExists {
		b.t.Fatal(err)
	}
	timeIt := func(runs int, idle time.Duration, op func() error) []time.Duration {
		out := make([]time.Duration, 0, runs)
		for i := -warmups * 10; i < runs; i++ {
			time.Sleep(idle)
			start := time.Now()
			if err := op(); err != nil {
				b.t.Fatal(err)
			}
			if i >= 0 {
				out = append(out, time.Since(start))
			}
		}
		return out
	}
	getData := func() error { _, _, err := b.conn.Get(dir); return err }
	exists := timeIt(rttRuns, 0, func() error { _, _, err := b.conn.Exists(dir); return err })
	hot := timeIt(rttRuns, 0, getData)
	cold := timeIt(coldRuns, coldIdle, getData)
	createDelete := timeIt(createDeleteRuns, 0, func() error {
		p, err := b.conn.Create(dir+"/n-", []byte("host:1"), zk.FlagEphemeral|zk.FlagSequence, zk.WorldACL(zk.PermAll))
		if err != nil {
			return err
		}
		return b.conn.Delete(p, -1)
	})
	bare := b.bareHandoffs(dir)
	forkExec := b.forkExecs()
	exits := b.workloadExits()

	b.r.exists = b.add(figure{name: "round trip: exists", unit: seconds, values: secs(exists),
		how: "`Exists` on an open go-zookeeper session (the client lockex uses), back to back, timed in the bench."}).summary()
	b.r.rtt = b.add(figure{name: "round trip: getData (the unit below)", unit: seconds, values: secs(hot),
		how: "`Get` of a 12-byte node the same way. Its median is the round trip that the ratios below count in."}).summary()
	b.r.coldRTT = b.add(figure{name: "round trip: getData after 20ms idle", unit: seconds, values: secs(cold),
		limit: fmtRT(secs(cold), b.r.rtt.median),
		how:   "The same `Get`, each after the client and the server have idled for 20ms: their threads are asleep and must be woken, as in every step of a handoff, where each process has waited."}).summary()
	b.r.createDelete = b.add(figure{name: "ephemeral sequential create + delete", unit: seconds, values: secs(createDelete),
		limit: fmtRT(secs(createDelete), b.r.rtt.median),
		how:   "`Create` of an ephemeral sequential node, then its `Delete`, back to back, timed together: two writes, each synced to the server's transaction log before it answers."}).summary()
	b.r.bare = b.add(figure{name: "bare handoff: delete → watcher notified", unit: seconds, values: secs(bare),
		limit: fmtRT(secs(bare), b.r.rtt.median),
		how:   "Two sessions of the bench: one deletes its ephemeral node, the other has an exists watch on it. From the `Delete` call to the watch event's arrival, after 20ms idle: the least any ZooKeeper lock's handoff takes here, before the next holder even looks at the children."}).summary()
	b.r.forkExec = b.add(figure{name: "fork + exec of `true`", unit: seconds, values: secs(forkExec),
		how: "`syscall.ForkExec` of `true` by the bench, in a process group of its own as lockex starts its workload, after 20ms idle: from the call to its return, which waits until the `execve` succeeded (the point at which lockex logs `workload started`). The child is reaped outside the timing."}).summary()
	b.r.workloadExit = b.add(figure{name: "the handoff's workload exiting: its clock → its exit seen", unit: seconds, values: secs(exits),
		how: "The handoff's workload (this test binary as a helper), started by the bench without lockex: the bench closes its stdin, the helper prints its clock and exits; from that clock to its pidfd turning readable in the bench (the process is a zombie, its status can be collected). Part of every handoff below, before lockex can learn anything, and not in the floor."}).summary()
}

// workloadExits times the handoff's workload (the hold helper) from the
// clock it prints to its pidfd turning readable in its parent: the kernel's
// part of the exit, which a handoff cannot skip.
func (b *bench) workloadExits() []time.Duration {
	self, err := os.Executable()
	if err != nil {
		b.t.Fatal(err)
	}
	out := make([]time.Duration, 0, exitRuns)
	for i := -warmups; i < exitRuns; i++ {
		cmd := exec.Command(self)
		cmd.Env = append(os.Environ(), helperEnv+"=hold")
		stdin, err := cmd.StdinPipe()
		if err != nil {
			b.t.Fatal(err)
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			b.t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			b.t.Fatal(err)
		}
		pidfd, err := unix.PidfdOpen(cmd.Process.Pid, 0)
		if err != nil {
			b.t.Fatal(err)
		}
		time.Sleep(coldIdle)
		stdin.Close()
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
		for {
			if _, err := unix.Poll(fds, -1); err != unix.EINTR {
				break
			}
		}
		seen := time.Now()
		unix.Close(pidfd)
		if err := cmd.Wait(); err != nil {
			b.t.Fatalf("the hold helper: %v", err)
		}
		ns, err := strconv.ParseInt(strings.TrimPrefix(strings.TrimSpace(line), "exit "), 10, 64)
		if err != nil {
			b.t.Fatalf("the hold helper printed %q", line)
		}
		if i >= 0 {
			out = append(out, seen.Sub(time.Unix(0, ns)))
		}
	}
	return out
}

// forkExecs times the bench's own fork and exec of true.
func (b *bench) forkExecs() []time.Duration {
	path, err := exec.LookPath("true")
	if err != nil {
		b.t.Fatal(err)
	}
	attr := &syscall.ProcAttr{Files: []uintptr{0, 1, 2}, Sys: &syscall.SysProcAttr{Setpgid: true}}
	out := make([]time.Duration, 0, coldRuns)
	for i := -warmups * 10; i < coldRuns; i++ {
		time.Sleep(coldIdle)
		start := time.Now()
		pid, err := syscall.ForkExec(path, []string{"true"}, attr)
		took := time.Since(start)
		if err != nil {
			b.t.Fatal(err)
		}
		var ws syscall.WaitStatus
		if _, err := syscall.Wait4(pid, &ws, 0, nil); err != nil {
			b.t.Fatal(err)
		}
		if i >= 0 {
			out = append(out, took)
		}
	}
	return out
}

// bareHandoffs times a delete by one session until another's watch fires,
// both on the standalone server, each in turn the deleter.
func (b *bench) bareHandoffs(dir string) []time.Duration {
	return b.bareHandoffsBetween([]*zk.Conn{b.conn, b.peer}, dir)
}
