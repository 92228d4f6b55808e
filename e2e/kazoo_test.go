package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// python is Debian's interpreter, the one python3-kazoo is installed for
// (a python3 earlier in PATH, pyenv's say, would not find it).
const python = "/usr/bin/python3"

// kazoo runs the kazoo peer to the end and returns its exit code.
func kazoo(t *testing.T, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(python, append([]string{"testdata/kazoo_peer.py"}, args...)...)
	out, err := cmd.Output()
	if ee, ok := err.(*exec.ExitError); ok {
		if ee.ExitCode() != 75 && ee.ExitCode() != 3 {
			t.Logf("kazoo peer %v: exit %d\n%s", args, ee.ExitCode(), ee.Stderr)
		}
		return ee.ExitCode(), string(out)
	}
	if err != nil {
		t.Fatalf("kazoo peer %v: %v (make test installs python3-kazoo)", args, err)
	}
	return 0, string(out)
}

// kazooHolder takes a kazoo Lock and keeps it until release is called.
func kazooHolder(t *testing.T, hosts, path string) (release func()) {
	t.Helper()
	cmd := exec.Command(python, "testdata/kazoo_peer.py", hosts, "hold-lock", path, "kazoo-holder")
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("kazoo peer: %v (make test installs python3-kazoo)", err)
	}
	line, _ := bufio.NewReader(stdout).ReadString('\n')
	if strings.TrimSpace(line) != "held" {
		t.Fatalf("kazoo peer did not take the lock: %q", line)
	}
	var once sync.Once
	release = func() {
		once.Do(func() {
			stdin.Close()
			if err := cmd.Wait(); err != nil {
				t.Errorf("kazoo holder: %v", err)
			}
		})
	}
	t.Cleanup(release)
	return release
}

func TestKazooLockExcludesLockex(t *testing.T) {
	zk := startZK(t)
	env := []string{"LOCKEX_ZKHOSTS=" + zk.Hosts(), "LOCKEX_LOCKID=interop"}
	release := kazooHolder(t, zk.Hosts(), "/lockex/interop")
	if r := lockex(t, env, "--no-blocking", "--", "echo", "ran"); r.code != 75 || r.stdout != "" {
		t.Fatalf("kazoo holds: lockex exit %d, stdout %q; log:\n%s", r.code, r.stdout, r.stderr)
	}
	waiter := startLockex(t, env, "--", "true")
	conn := zkClient(t, zk.Hosts())
	eventually(t, 10*time.Second, "lockex queued behind kazoo", func() bool { return len(children(t, conn, "/lockex/interop")) == 2 })
	select {
	case <-waiter.done:
		t.Fatalf("lockex ran while kazoo held the lock; log:\n%s", waiter.stderr)
	case <-time.After(300 * time.Millisecond):
	}
	release()
	if code := waiter.wait(t, 10*time.Second); code != 0 {
		t.Fatalf("after kazoo released: exit %d; log:\n%s", code, waiter.stderr)
	}
}

func TestLockexExcludesKazooAndShowsInContenders(t *testing.T) {
	zk := startZK(t)
	env := []string{"LOCKEX_ZKHOSTS=" + zk.Hosts(), "LOCKEX_LOCKID=interop"}
	conn := zkClient(t, zk.Hosts())
	holder := startLockex(t, env, "--", "sleep", "60")
	eventually(t, 10*time.Second, "lockex holds", func() bool { return len(children(t, conn, "/lockex/interop")) == 1 })
	saysSince(t, conn, "/lockex/interop")
	waiter := startLockex(t, env, "--", "true")
	eventually(t, 10*time.Second, "lockex waits", func() bool { return len(children(t, conn, "/lockex/interop")) == 2 })

	if code, _ := kazoo(t, zk.Hosts(), "try-lock", "/lockex/interop", "kazoo"); code != 75 {
		t.Fatalf("kazoo took a lock lockex holds (exit %d)", code)
	}
	_, out := kazoo(t, zk.Hosts(), "contenders", "/lockex/interop")
	var contenders []string
	if err := json.Unmarshal([]byte(out), &contenders); err != nil {
		t.Fatalf("contenders output %q: %v", out, err)
	}
	host, _ := os.Hostname()
	// hostname:pid, as the original tool wrote, then lockex's version, and
	// for the holder since when it holds, which it wrote into its node.
	holderID := fmt.Sprintf("%s:%d lockex/%s since=", host, holder.cmd.Process.Pid, lockexVersion)
	want := fmt.Sprintf("%s:%d lockex/%s", host, waiter.cmd.Process.Pid, lockexVersion)
	if len(contenders) != 2 || !strings.HasPrefix(contenders[0], holderID) || contenders[1] != want {
		t.Fatalf("kazoo contenders() = %q, want holder %q… then waiter %q", contenders, holderID, want)
	}
	if since, err := time.Parse("2006-01-02T15:04:05.000Z", strings.TrimPrefix(contenders[0], holderID)); err != nil || time.Since(since) > time.Minute || time.Since(since) < 0 {
		t.Errorf("the holder's since in %q: %v, want a time of this test", contenders[0], err)
	}
	_ = holder.cmd.Process.Signal(syscall.SIGTERM)
	holder.wait(t, 10*time.Second)
	waiter.wait(t, 10*time.Second)
	if code, _ := kazoo(t, zk.Hosts(), "try-lock", "/lockex/interop", "kazoo"); code != 0 {
		t.Errorf("kazoo could not take the free lock (exit %d)", code)
	}
}

// TestMixedFleet: lockex and kazoo contenders take turns on one lock, and
// lockex and kazoo leases share one semaphore, as during a migration.
func TestMixedFleet(t *testing.T) {
	zk := startZK(t)
	for _, tc := range []struct {
		name  string
		size  int
		holds time.Duration
	}{{"lock", 1, 100 * time.Millisecond}, {"semaphore", 2, 300 * time.Millisecond}} {
		t.Run(tc.name, func(t *testing.T) {
			logPath := filepath.Join(t.TempDir(), "holders.log")
			path := "/lockex/mixed-" + tc.name
			var wg sync.WaitGroup
			for i := range 3 {
				wg.Add(2)
				go func() {
					defer wg.Done()
					for round := range 2 {
						args := []string{"-z", zk.Hosts(), "-i", "mixed-" + tc.name, "-c", fmt.Sprint(tc.size), "--"}
						if r := lockex(t, nil, append(args, recorder(logPath, fmt.Sprintf("lockex%d.%d", i, round), tc.holds)...)...); r.code != 0 {
							t.Errorf("lockex: exit %d\n%s", r.code, r.stderr)
						}
					}
				}()
				go func() {
					defer wg.Done()
					for round := range 2 {
						who := fmt.Sprintf("kazoo%d.%d", i, round)
						hold := fmt.Sprintf("%.3f", tc.holds.Seconds())
						args := []string{zk.Hosts(), "lock", path, who, logPath, who, hold}
						if tc.size > 1 {
							args = []string{zk.Hosts(), "semaphore", path, who, fmt.Sprint(tc.size), logPath, who, hold}
						}
						if code, _ := kazoo(t, args...); code != 0 {
							t.Errorf("kazoo %s: exit %d", who, code)
						}
					}
				}()
			}
			wg.Wait()
			ivs := readIntervals(t, logPath)
			if len(ivs) != 12 {
				t.Fatalf("%d runs recorded, want 12", len(ivs))
			}
			if n := maxOverlap(ivs); n > tc.size {
				t.Errorf("%d holders at once, size %d", n, tc.size)
			}
			var kinds [2]bool
			for _, iv := range ivs {
				kinds[boolIndex(strings.HasPrefix(iv.who, "kazoo"))] = true
			}
			if !kinds[0] || !kinds[1] {
				t.Errorf("want both kinds of holder: %v", ivs)
			}
		})
	}
}

func boolIndex(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestSemaphoreSizeAgreesWithKazoo: each side refuses the other's size.
func TestSemaphoreSizeAgreesWithKazoo(t *testing.T) {
	zk := startZK(t)
	if code, _ := kazoo(t, zk.Hosts(), "try-semaphore", "/lockex/size", "kazoo", "2"); code != 0 {
		t.Fatalf("kazoo semaphore: exit %d", code)
	}
	r := lockex(t, nil, "-z", zk.Hosts(), "-i", "size", "-c", "3", "--", "true")
	if r.code != 64 || !strings.Contains(r.stderr, `size \"2\" in ZooKeeper, asked for 3`) {
		t.Errorf("lockex -c 3 on kazoo's size 2: exit %d; log:\n%s", r.code, r.stderr)
	}
	if r := lockex(t, nil, "-z", zk.Hosts(), "-i", "size", "-c", "2", "--", "true"); r.code != 0 {
		t.Errorf("lockex -c 2 on kazoo's size 2: exit %d; log:\n%s", r.code, r.stderr)
	}
	if code, _ := kazoo(t, zk.Hosts(), "try-semaphore", "/lockex/size", "kazoo", "4"); code != 3 {
		t.Errorf("kazoo Semaphore(4) on size 2: exit %d, want 3 (kazoo's ValueError)", code)
	}
}
