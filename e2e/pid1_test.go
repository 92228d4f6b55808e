package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A mode is how lockex gets the orphans of its workload: as PID 1 of a new
// PID namespace, as in a container, or with --subreaper on a host.
type mode struct {
	name  string
	pid1  bool
	plain bool // neither: no orphans come to lockex
}

var modes = []mode{{name: "pid1", pid1: true}, {name: "subreaper"}}

// start runs lockex in mode m with args (before the "--" and command).
func (m mode) start(t *testing.T, env []string, args ...string) *started {
	t.Helper()
	if m.pid1 {
		// --kill-child: if the test dies, lockex and its namespace go too.
		return startCommand(t, env, "unshare", append([]string{"--pid", "--fork", "--mount-proc", "--kill-child", lockexBin}, args...)...)
	}
	if m.plain {
		return startCommand(t, env, lockexBin, args...)
	}
	return startCommand(t, env, lockexBin, append([]string{"--subreaper"}, args...)...)
}

// lockexPid is the pid of the lockex process itself, as the test sees it.
func (s *started) lockexPid(t *testing.T, m mode) int {
	t.Helper()
	if !m.pid1 {
		return s.cmd.Process.Pid
	}
	var pid int
	eventually(t, 5*time.Second, "unshare forked lockex", func() bool {
		kids := childrenOf(s.cmd.Process.Pid)
		if len(kids) == 1 {
			pid = kids[0]
		}
		return pid != 0
	})
	return pid
}

// childrenOf lists the processes whose parent is pid, from /proc.
func childrenOf(pid int) []int {
	entries, _ := os.ReadDir("/proc")
	var kids []int
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ppid, _ := statOf(p); ppid == pid {
			kids = append(kids, p)
		}
	}
	return kids
}

// statOf reads a process's parent and state; state is 0 if it is gone.
func statOf(pid int) (ppid int, state byte) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0
	}
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	ppid, _ = strconv.Atoi(fields[1])
	return ppid, fields[0][0]
}

// alive reports whether pid runs: it exists and is not a zombie.
func alive(pid int) bool {
	_, state := statOf(pid)
	return state != 0 && state != 'Z'
}

// waitFile waits for a file a workload writes to say it got somewhere.
func waitFile(t *testing.T, path string) string {
	t.Helper()
	var b []byte
	eventually(t, 10*time.Second, "the workload wrote "+filepath.Base(path), func() bool {
		var err error
		b, err = os.ReadFile(path)
		return err == nil && len(b) > 0
	})
	return strings.TrimSpace(string(b))
}

// TestReapsOrphans: grandchildren orphaned by the workload are handed to
// lockex, and lockex reaps them; none stays a zombie.
func TestReapsOrphans(t *testing.T) {
	zk := startZK(t)
	const workload = `
for i in 1 2 3; do
	mkfifo "$D/fifo$i"
	# The inner shell exits at once: its background cat is orphaned.
	sh -c 'cat "$D/fifo'$i'" >/dev/null & echo $! > "$D/orphan'$i'"'
	o=$(cat "$D/orphan$i")
	parent=$(awk '/^PPid:/ {print $2}' /proc/$o/status)
	[ "$parent" = "$PPID" ] || { echo "orphan $o went to $parent, not lockex ($PPID)" >&2; exit 2; }
	echo > "$D/fifo$i"   # now it exits, and only lockex can reap it
	n=0
	while [ -e /proc/$o ]; do
		n=$((n+1))
		[ $n -lt 1000 ] || { echo "orphan $o not reaped: $(grep State /proc/$o/status)" >&2; exit 3; }
		sleep 0.01
	done
done`
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			dir := t.TempDir()
			s := m.start(t, []string{"D=" + dir}, "-z", zk.Hosts(), "-i", "reap-"+m.name, "--", "sh", "-c", workload)
			if code := s.wait(t, 30*time.Second); code != 0 {
				t.Fatalf("exit %d; log:\n%s", code, s.stderr)
			}
		})
	}
}

// TestForwardedSignalExitCode: a workload that traps SIGTERM sees the one
// sent to lockex, and the code it then exits with is lockex's.
func TestForwardedSignalExitCode(t *testing.T) {
	zk := startZK(t)
	const workload = `trap 'echo TERM > "$D/got"; exit 42' TERM
echo ready > "$D/ready"
sleep 1000 & wait $!`
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			dir := t.TempDir()
			s := m.start(t, []string{"D=" + dir}, "-z", zk.Hosts(), "-i", "trap-"+m.name, "--", "sh", "-c", workload)
			waitFile(t, filepath.Join(dir, "ready"))
			if err := syscall.Kill(s.lockexPid(t, m), syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			if code := s.wait(t, 10*time.Second); code != 42 {
				t.Fatalf("exit %d, want the workload's 42; log:\n%s", code, s.stderr)
			}
			if got := waitFile(t, filepath.Join(dir, "got")); got != "TERM" {
				t.Errorf("workload saw %q", got)
			}
		})
	}
}

// TestKilledBySignal: each forwarded signal reaches the workload's group,
// and a workload it kills makes lockex exit 128+N; SIGWINCH, which sleep
// ignores, leaves it running.
func TestKilledBySignal(t *testing.T) {
	zk := startZK(t)
	for _, m := range modes {
		for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2} {
			t.Run(m.name+"/"+strings.TrimPrefix(sig.String(), "user defined "), func(t *testing.T) {
				dir := t.TempDir()
				s := m.start(t, []string{"D=" + dir}, "-z", zk.Hosts(), "-i", "sig", "--",
					"sh", "-c", `ulimit -c 0; echo ready > "$D/ready"; exec sleep 1000`)
				waitFile(t, filepath.Join(dir, "ready"))
				pid := s.lockexPid(t, m)
				// The shell has not necessarily exec'd sleep yet: a WINCH
				// must not end either of them.
				if err := syscall.Kill(pid, syscall.SIGWINCH); err != nil {
					t.Fatal(err)
				}
				if err := syscall.Kill(pid, sig); err != nil {
					t.Fatal(err)
				}
				if code, want := s.wait(t, 10*time.Second), 128+int(sig); code != want {
					t.Fatalf("exit %d, want %d; log:\n%s", code, want, s.stderr)
				}
			})
		}
	}
}

// TestSignalWhileWaiting: a waiting lockex stopped by SIGTERM exits 143
// and has deleted its node by then.
func TestSignalWhileWaiting(t *testing.T) {
	zk := startZK(t)
	conn := zkClient(t, zk.Hosts())
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			id := "wait-" + m.name
			holder := startLockex(t, nil, "-z", zk.Hosts(), "-i", id, "--", "sleep", "1000")
			eventually(t, 10*time.Second, "the holder holds", func() bool { return len(children(t, conn, "/lockex/"+id)) == 1 })
			waiter := m.start(t, nil, "-z", zk.Hosts(), "-i", id, "--", "true")
			eventually(t, 10*time.Second, "the waiter waits", func() bool { return len(children(t, conn, "/lockex/"+id)) == 2 })
			if err := syscall.Kill(waiter.lockexPid(t, m), syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			if code := waiter.wait(t, 10*time.Second); code != 143 {
				t.Fatalf("exit %d, want 143; log:\n%s", code, waiter.stderr)
			}
			if n := len(children(t, conn, "/lockex/"+id)); n != 1 {
				t.Errorf("%d nodes after the waiter exited, want the holder's alone", n)
			}
			_ = holder.cmd.Process.Signal(syscall.SIGTERM)
			holder.wait(t, 10*time.Second)
		})
	}
}

// TestKillingLockexKillsWorkload: SIGKILL of lockex leaves no workload
// running (the parent-death signal, or the end of the PID namespace), and
// no guardian: there is none as PID 1, where the kernel needs no help.
func TestKillingLockexKillsWorkload(t *testing.T) {
	zk := startZK(t)
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			dir := t.TempDir()
			s := m.start(t, []string{"D=" + dir}, "-z", zk.Hosts(), "-i", "kill9-"+m.name, "--",
				"sh", "-c", `echo ready > "$D/ready"; exec sleep 1000`)
			waitFile(t, filepath.Join(dir, "ready"))
			pid := s.lockexPid(t, m)
			guards, workloads := lockexChildren(pid)
			if len(workloads) != 1 {
				t.Fatalf("lockex has children %v besides its guardians %v, want one workload", workloads, guards)
			}
			if want := map[bool]int{true: 0, false: 1}[m.pid1]; len(guards) != want {
				t.Fatalf("lockex has guardians %v, want %d", guards, want)
			}
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			eventually(t, 5*time.Second, "the workload died with lockex", func() bool { return !alive(workloads[0]) })
			for _, g := range guards {
				eventually(t, 5*time.Second, "the guardian exited", func() bool { return !alive(g) })
			}
		})
	}
}

// TestLeftoversStoppedBeforeNextHolder: what the workload leaves running
// when its main process exits (a background child in its group, one that
// ignores SIGTERM, a daemon in a session of its own) is stopped before the
// lock goes to the next contender. A plain lockex (no orphans come to it)
// finds the daemon in the workload's cgroup, which it makes here as root.
func TestLeftoversStoppedBeforeNextHolder(t *testing.T) {
	zk := startZK(t)
	conn := zkClient(t, zk.Hosts())
	const loop = `while :; do date +%s%N >> "$D/ticks"; sleep 0.01; done`
	for _, m := range append(modes, mode{name: "plain", plain: true}) {
		for _, tc := range []struct {
			name, leftover string
			killed         bool
		}{
			{"background child", "(" + loop + ") &", false},
			{"ignores TERM", `(trap "" TERM; ` + loop + ") &", true},
			{"setsid daemon", `setsid sh -c 'trap "" TERM; ` + loop + `' &`, true},
		} {
			t.Run(m.name+"/"+tc.name, func(t *testing.T) {
				dir := t.TempDir()
				id := "leftover"
				// The main process starts the leftover, then exits when
				// told to: by then the next contender waits.
				first := m.start(t, []string{"D=" + dir}, "-z", zk.Hosts(), "-i", id, "--kill-grace", "300ms", "--",
					"sh", "-c", tc.leftover+`
while [ ! -e "$D/go" ]; do sleep 0.01; done`)
				waitFile(t, filepath.Join(dir, "ticks"))
				next := startLockex(t, []string{"D=" + dir}, "-z", zk.Hosts(), "-i", id, "--",
					"sh", "-c", `date +%s%N > "$D/next"`)
				eventually(t, 10*time.Second, "the next contender waits", func() bool { return len(children(t, conn, "/lockex/"+id)) == 2 })
				if err := os.WriteFile(filepath.Join(dir, "go"), nil, 0o644); err != nil {
					t.Fatal(err)
				}
				if code := first.wait(t, 10*time.Second); code != 0 {
					t.Fatalf("first exit %d, want its main process's 0; log:\n%s", code, first.stderr)
				}
				if code := next.wait(t, 10*time.Second); code != 0 {
					t.Fatalf("next exit %d; log:\n%s", code, next.stderr)
				}
				nextStart, _ := strconv.ParseInt(waitFile(t, filepath.Join(dir, "next")), 10, 64)
				ticks, err := os.ReadFile(filepath.Join(dir, "ticks"))
				if err != nil {
					t.Fatal(err)
				}
				for _, line := range strings.Fields(string(ticks)) {
					if tick, _ := strconv.ParseInt(line, 10, 64); tick >= nextStart {
						t.Fatalf("the leftover ran %v after the next holder started; log:\n%s", time.Duration(tick-nextStart), first.stderr)
					}
				}
				if got := strings.Contains(first.stderr.String(), "SIGKILL"); got != tc.killed {
					t.Errorf("SIGKILL sent: %v, want %v; log:\n%s", got, tc.killed, first.stderr)
				}
			})
		}
	}
}

// startCommand runs name with args in the background, with env added.
func startCommand(t *testing.T, env []string, name string, args ...string) *started {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	return startCmd(t, cmd)
}
