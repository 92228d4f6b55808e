package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lockex/lockex/internal/zktest"
)

// TestExitCodes covers every row of the exit-code table (docs/design.md §2) that needs no
// second contender, against one server.
func TestExitCodes(t *testing.T) {
	zk := startZK(t)
	hosts := []string{"LOCKEX_ZKHOSTS=" + zk.Hosts()}
	notExec := filepath.Join(t.TempDir(), "script")
	if err := os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		env  []string
		args []string
		code int
		say  string // in the log
	}{
		{"workload 0", hosts, []string{"--", "true"}, 0, ""},
		{"workload 1", hosts, []string{"--", "false"}, 1, ""},
		{"workload 42", hosts, []string{"--", "sh", "-c", "exit 42"}, 42, ""},
		{"workload 255", hosts, []string{"--", "sh", "-c", "exit 255"}, 255, ""},
		{"workload killed by TERM", hosts, []string{"--", "sh", "-c", "kill -TERM $$"}, 143, ""},
		{"workload killed by KILL", hosts, []string{"--", "sh", "-c", "kill -KILL $$"}, 137, ""},
		{"command without --", hosts, []string{"sh", "-c", "exit 7"}, 7, ""},
		{"no command", hosts, nil, 64, "no command"},
		{"bad duration", hosts, []string{"-t", "soon", "--", "true"}, 64, `soon`},
		{"bad duration in env", append(hosts, "LOCKEX_MIN_HOLD=1x"), []string{"--", "true"}, 64, "LOCKEX_MIN_HOLD"},
		{"negative max-runtime", hosts, []string{"--max-runtime", "-1s", "--", "true"}, 64, `\"-1s\" for \"--max-runtime\"`},
		{"concurrent 0", hosts, []string{"-c", "0", "--", "true"}, 64, `--concurrent \"0\"`},
		{"bad kill signal", hosts, []string{"--kill-signal", "NOPE", "--", "true"}, 64, "NOPE"},
		{"illegal lockpath", hosts, []string{"-p", "a//b", "--", "true"}, 64, "a//b"},
		{"illegal lockid", hosts, []string{"-i", "..", "--", "true"}, 64, `lockid \"..\"`},
		{"malformed zkhosts", nil, []string{"-z", "host:port", "--", "true"}, 64, `port \"port\"`},
		{"health-cmd with shell syntax", hosts, []string{"--health-cmd", "curl -f x || exit 1", "--", "true"}, 64, "is shell syntax"},
		{"health-cmd not found", hosts, []string{"--health-cmd", "no-such-check-lockex --now", "--", "true"}, 64, "no-such-check-lockex"},
		{"health-url and health-cmd", hosts, []string{"--health-url", "http://127.0.0.1:1/", "--health-cmd", "true", "--", "true"}, 64, "not together with --health-url"},
		{"bad health threshold in env", append(hosts, "LOCKEX_HEALTH_FAILURE_THRESHOLD=0"), []string{"--", "true"}, 64, "LOCKEX_HEALTH_FAILURE_THRESHOLD"},
		{"command not found", hosts, []string{"--", "no-such-command-lockex"}, 127, "no-such-command-lockex"},
		{"command not executable", hosts, []string{"--", notExec}, 126, notExec},
		{"unreachable zookeeper", nil, []string{"-z", closedPort(t), "-T", "1", "--", "true"}, 69, "connection refused"},
		{"unresolvable zookeeper", nil, []string{"-z", "no-such-host.invalid", "-T", "1", "--", "true"}, 69, "no-such-host.invalid"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := lockex(t, tc.env, tc.args...)
			if r.code != tc.code {
				t.Fatalf("exit %d, want %d; log:\n%s", r.code, tc.code, r.stderr)
			}
			if tc.say != "" && !strings.Contains(r.stderr, tc.say) {
				t.Errorf("log does not mention %s:\n%s", tc.say, r.stderr)
			}
			if tc.code >= 64 && tc.code < 128 && strings.Count(strings.TrimSpace(r.stderr), "\n") > 4 {
				t.Errorf("a bad input should cost a line or two of log, got:\n%s", r.stderr)
			}
		})
	}
	// Nothing that failed left a node: only the persistent parents remain.
	conn := zkClient(t, zk.Hosts())
	for _, id := range children(t, conn, "/lockex") {
		if kids := children(t, conn, "/lockex/"+id); len(kids) != 0 {
			t.Errorf("/lockex/%s still has %v", id, kids)
		}
	}
}

// closedPort is a loopback address where nothing listens.
func closedPort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func TestUnreachableIsBounded(t *testing.T) {
	r := lockex(t, nil, "-z", closedPort(t), "-T", "0.5", "-R", "3", "--", "true")
	if r.code != 69 {
		t.Fatalf("exit %d, want 69; log:\n%s", r.code, r.stderr)
	}
	// Three attempts of half a second each: it must not hang.
	if r.took < 1500*time.Millisecond || r.took > 10*time.Second {
		t.Errorf("took %s for -R 3 -T 0.5", r.took)
	}
	if n := strings.Count(r.stderr, "trying again"); n != 2 {
		t.Errorf("want 2 retries logged, got %d:\n%s", n, r.stderr)
	}
}

// TestBusy covers --no-blocking, --locktimeout and --busy-exit-code while
// another lockex holds the lock, and a signal while waiting.
func TestBusy(t *testing.T) {
	zk := startZK(t)
	env := []string{"LOCKEX_ZKHOSTS=" + zk.Hosts(), "LOCKEX_LOCKID=busy"}
	conn := zkClient(t, zk.Hosts())
	holder := startLockex(t, env, "--", "sleep", "60")
	eventually(t, 10*time.Second, "holder has the lock", func() bool { return len(children(t, conn, "/lockex/busy")) == 1 })

	t.Run("no-blocking", func(t *testing.T) {
		r := lockex(t, env, "--no-blocking", "--", "echo", "ran")
		if r.code != 75 || strings.Contains(r.stdout, "ran") {
			t.Fatalf("exit %d stdout %q, want 75 and no run; log:\n%s", r.code, r.stdout, r.stderr)
		}
		if r.took > 5*time.Second {
			t.Errorf("--no-blocking took %s", r.took)
		}
	})
	t.Run("no-blocking from env", func(t *testing.T) {
		if r := lockex(t, append(env, "LOCKEX_BLOCKING=false"), "--", "true"); r.code != 75 {
			t.Fatalf("exit %d, want 75", r.code)
		}
	})
	t.Run("busy-exit-code", func(t *testing.T) {
		if r := lockex(t, env, "--no-blocking", "--busy-exit-code", "3", "--", "true"); r.code != 3 {
			t.Fatalf("exit %d, want 3", r.code)
		}
	})
	t.Run("locktimeout", func(t *testing.T) {
		r := lockex(t, env, "-t", "1.2", "--", "echo", "ran")
		if r.code != 75 || strings.Contains(r.stdout, "ran") {
			t.Fatalf("exit %d, want 75; log:\n%s", r.code, r.stderr)
		}
		if r.took < 1200*time.Millisecond || r.took > 6*time.Second {
			t.Errorf("-t 1.2 gave up after %s", r.took)
		}
		if !strings.Contains(r.stderr, "--locktimeout 1.2s passed") {
			t.Errorf("log does not say why:\n%s", r.stderr)
		}
	})
	t.Run("locktimeout 0 is one look", func(t *testing.T) {
		if r := lockex(t, env, "-t", "0", "--", "true"); r.code != 75 || !strings.Contains(r.stderr, "no-blocking") {
			t.Fatalf("exit %d, want 75; log:\n%s", r.code, r.stderr)
		}
	})
	t.Run("locktimeout does not cover reaching zookeeper", func(t *testing.T) {
		r := lockex(t, nil, "-z", closedPort(t), "-T", "1", "-t", "0.2", "--", "true")
		if r.code != 69 {
			t.Fatalf("exit %d, want 69 (unreachable, not busy); log:\n%s", r.code, r.stderr)
		}
	})
	t.Run("locktimeout as duration", func(t *testing.T) {
		if r := lockex(t, env, "--locktimeout", "300ms", "--", "true"); r.code != 75 || r.took < 300*time.Millisecond {
			t.Fatalf("exit %d after %s, want 75 after 300ms", r.code, r.took)
		}
	})
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP} {
		t.Run("signal while waiting "+sig.String(), func(t *testing.T) {
			waiter := startLockex(t, env, "--", "echo", "ran")
			eventually(t, 10*time.Second, "waiter queued", func() bool { return len(children(t, conn, "/lockex/busy")) == 2 })
			_ = waiter.cmd.Process.Signal(sig)
			if code := waiter.wait(t, 10*time.Second); code != 128+int(sig) {
				t.Fatalf("exit %d, want %d; log:\n%s", code, 128+int(sig), waiter.stderr)
			}
			// Deleted before lockex exited, not when the session ends.
			if kids := children(t, conn, "/lockex/busy"); len(kids) != 1 {
				t.Errorf("after the waiter exited: %v", kids)
			}
		})
	}
	t.Run("killed waiter's node goes with its session", func(t *testing.T) {
		waiter := startLockex(t, env, "--session-timeout", "2s", "--kill-grace", "1s", "--", "true")
		eventually(t, 10*time.Second, "waiter queued", func() bool { return len(children(t, conn, "/lockex/busy")) == 2 })
		_ = waiter.cmd.Process.Kill()
		waiter.wait(t, 5*time.Second)
		eventually(t, 8*time.Second, "node of the SIGKILLed waiter expired", func() bool { return len(children(t, conn, "/lockex/busy")) == 1 })
	})
	_ = holder.cmd.Process.Signal(syscall.SIGTERM)
	if code := holder.wait(t, 10*time.Second); code != 143 {
		t.Errorf("holder: exit %d, want 143 (sleep killed by the forwarded TERM)", code)
	}
	if kids := children(t, conn, "/lockex/busy"); len(kids) != 0 {
		t.Errorf("after the holder exited: %v", kids)
	}
}

// TestMutualExclusion: 5 contenders, 3 rounds each; never two at once, and
// each new holder's fencing token is larger than the last one's.
func TestMutualExclusion(t *testing.T) {
	zk := startZK(t)
	logPath := filepath.Join(t.TempDir(), "holders.log")
	env := []string{"LOCKEX_ZKHOSTS=" + zk.Hosts(), "LOCKEX_LOCKID=mutex"}
	var wg sync.WaitGroup
	errs := make(chan string, 15)
	for c := range 5 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for round := range 3 {
				who := fmt.Sprintf("c%d.r%d", c, round)
				if r := lockex(t, env, recorder(logPath, who, 100*time.Millisecond)...); r.code != 0 {
					errs <- fmt.Sprintf("%s: exit %d\n%s", who, r.code, r.stderr)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	checkOneAtATime(t, logPath, 15)
}

// checkOneAtATime reads runs recorded by recorder workloads and checks that
// they never overlapped and that each holder's fencing token was larger
// than the one before.
func checkOneAtATime(t *testing.T, logPath string, runs int) {
	t.Helper()
	ivs := readIntervals(t, logPath)
	if len(ivs) != runs {
		t.Fatalf("%d runs recorded, want %d", len(ivs), runs)
	}
	if n := maxOverlap(ivs); n != 1 {
		t.Errorf("%d holders at once", n)
	}
	for i := 1; i < len(ivs); i++ {
		if ivs[i].token <= ivs[i-1].token {
			t.Errorf("fencing token went from %d (%s) to %d (%s)", ivs[i-1].token, ivs[i-1].who, ivs[i].token, ivs[i].who)
		}
	}
}

// TestSemaphore: 8 contenders on -c 3 never hold more than 3 leases, and do
// hold 3 at once; the size is stored on P and a different size is refused.
func TestSemaphore(t *testing.T) {
	zk := startZK(t)
	logPath := filepath.Join(t.TempDir(), "holders.log")
	env := []string{"LOCKEX_ZKHOSTS=" + zk.Hosts(), "LOCKEX_LOCKID=sem"}
	var wg sync.WaitGroup
	for c := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if r := lockex(t, env, append([]string{"-c", "3", "--"}, recorder(logPath, fmt.Sprint("c", c), 500*time.Millisecond)...)...); r.code != 0 {
				t.Errorf("c%d: exit %d\n%s", c, r.code, r.stderr)
			}
		}()
	}
	wg.Wait()
	ivs := readIntervals(t, logPath)
	if len(ivs) != 8 {
		t.Fatalf("%d runs recorded, want 8", len(ivs))
	}
	if n := maxOverlap(ivs); n != 3 {
		t.Errorf("%d holders at once, want 3", n)
	}
	conn := zkClient(t, zk.Hosts())
	if data, _, err := conn.Get("/lockex/sem"); err != nil || string(data) != "3" {
		t.Errorf("/lockex/sem holds %q (%v), want 3", data, err)
	}
	r := lockex(t, env, "-c", "5", "--", "echo", "ran")
	if r.code != 64 || !strings.Contains(r.stderr, `size \"3\" in ZooKeeper, asked for 5`) || strings.Contains(r.stdout, "ran") {
		t.Errorf("-c 5 on a size-3 semaphore: exit %d; log:\n%s", r.code, r.stderr)
	}
	if r := lockex(t, env, "--", "true"); r.code != 64 {
		t.Errorf("a lock on a semaphore's path: exit %d, want 64; log:\n%s", r.code, r.stderr)
	}
	if kids := children(t, conn, "/lockex/sem"); len(kids) != 0 {
		t.Errorf("leases left: %v", kids)
	}
	if kids := children(t, conn, "/lockex/sem-__lock__"); len(kids) != 0 {
		t.Errorf("mutex nodes left: %v", kids)
	}
}

// TestSemaphoreNoBlocking: with all leases held, --no-blocking gives up at
// once; with one free, it takes it.
func TestSemaphoreNoBlocking(t *testing.T) {
	zk := startZK(t)
	env := []string{"LOCKEX_ZKHOSTS=" + zk.Hosts(), "LOCKEX_LOCKID=semnb"}
	conn := zkClient(t, zk.Hosts())
	a := startLockex(t, env, "-c", "2", "--", "sleep", "60")
	eventually(t, 10*time.Second, "first lease", func() bool { return len(children(t, conn, "/lockex/semnb")) == 1 })
	if r := lockex(t, env, "-c", "2", "--no-blocking", "--", "true"); r.code != 0 {
		t.Fatalf("one lease free: exit %d; log:\n%s", r.code, r.stderr)
	}
	b := startLockex(t, env, "-c", "2", "--", "sleep", "60")
	eventually(t, 10*time.Second, "second lease", func() bool { return len(children(t, conn, "/lockex/semnb")) == 2 })
	if r := lockex(t, env, "-c", "2", "--no-blocking", "--", "true"); r.code != 75 {
		t.Fatalf("no lease free: exit %d, want 75; log:\n%s", r.code, r.stderr)
	}
	for _, s := range []*started{a, b} {
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		s.wait(t, 10*time.Second)
	}
}

// TestWorkloadEnvironment checks the variables lockex gives the workload
// against the znodes themselves, inside a chroot.
func TestWorkloadEnvironment(t *testing.T) {
	zk := startZK(t)
	conn := zkClient(t, zk.Hosts())
	dir := t.TempDir()
	script := `echo "$LOCKEX_LOCK_PATH $LOCKEX_LOCK_NODE $LOCKEX_FENCING_TOKEN" > ` + dir + `/env; sleep 1`
	s := startLockex(t, nil, "-z", zk.Hosts()+"/apps/team", "-p", "locks", "-i", "job", "--", "sh", "-c", script)
	var fields []string
	eventually(t, 10*time.Second, "workload wrote its environment", func() bool {
		b, _ := os.ReadFile(dir + "/env")
		fields = strings.Fields(string(b))
		return len(fields) == 3
	})
	if fields[0] != "/locks/job" || !strings.HasPrefix(fields[1], "/locks/job/") {
		t.Errorf("LOCKEX_LOCK_PATH %q LOCKEX_LOCK_NODE %q: want them inside the chroot", fields[0], fields[1])
	}
	_, stat, err := conn.Get("/apps/team" + fields[1])
	if err != nil {
		t.Fatalf("own node not found under the chroot: %v", err)
	}
	if got := strconv.FormatInt(stat.Czxid, 10); fields[2] != got {
		t.Errorf("LOCKEX_FENCING_TOKEN %s, node's czxid %s", fields[2], got)
	}
	if stat.EphemeralOwner == 0 {
		t.Error("own node is not ephemeral")
	}
	if code := s.wait(t, 10*time.Second); code != 0 {
		t.Errorf("exit %d", code)
	}
	if kids := children(t, conn, "/apps/team/locks/job"); len(kids) != 0 {
		t.Errorf("left behind: %v", kids)
	}
}

// TestMinHold: the lock outlives a short workload by --min-hold.
func TestMinHold(t *testing.T) {
	zk := startZK(t)
	env := []string{"LOCKEX_ZKHOSTS=" + zk.Hosts(), "LOCKEX_LOCKID=cron"}
	s := startLockex(t, env, "--min-hold", "1.5", "--", "true")
	conn := zkClient(t, zk.Hosts())
	eventually(t, 10*time.Second, "held", func() bool { return len(children(t, conn, "/lockex/cron")) == 1 })
	if r := lockex(t, env, "--no-blocking", "--", "true"); r.code != 75 {
		t.Errorf("during --min-hold: exit %d, want 75", r.code)
	}
	start := time.Now()
	if code := s.wait(t, 10*time.Second); code != 0 {
		t.Errorf("exit %d", code)
	}
	t.Logf("released %s after the second try", time.Since(start))
	if r := lockex(t, env, "--no-blocking", "--", "true"); r.code != 0 {
		t.Errorf("after --min-hold: exit %d, want 0", r.code)
	}
}

// TestDerivedLockID: without --lockid, the same argv shares one lock.
func TestDerivedLockID(t *testing.T) {
	zk := startZK(t)
	env := []string{"LOCKEX_ZKHOSTS=" + zk.Hosts()}
	conn := zkClient(t, zk.Hosts())
	s := startLockex(t, env, "--", "sleep", "30")
	eventually(t, 10*time.Second, "held", func() bool { return len(children(t, conn, "/lockex")) == 1 })
	if r := lockex(t, env, "--no-blocking", "--", "sleep", "30"); r.code != 75 {
		t.Errorf("same argv: exit %d, want 75", r.code)
	}
	if r := lockex(t, env, "--no-blocking", "--", "sleep", "0"); r.code != 0 {
		t.Errorf("other argv: exit %d, want 0", r.code)
	}
	ids := children(t, conn, "/lockex")
	if len(ids) != 2 || len(ids[0]) != 16 {
		t.Errorf("lock ids %v", ids)
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	s.wait(t, 10*time.Second)
}

func TestVersionAndInstall(t *testing.T) {
	if r := lockex(t, nil, "--version"); r.code != 0 || !strings.HasPrefix(r.stdout, "lockex ") {
		t.Errorf("--version: exit %d, %q", r.code, r.stdout)
	}
	dir := t.TempDir()
	if r := lockex(t, nil, "--install", dir); r.code != 0 {
		t.Fatalf("--install: exit %d\n%s", r.code, r.stderr)
	}
	info, err := os.Stat(filepath.Join(dir, "lockex"))
	if err != nil || info.Mode().Perm() != 0o755 {
		t.Fatalf("installed: %v %v", info, err)
	}
	if r := lockex(t, nil, "--help"); r.code != 0 || !strings.Contains(r.stdout, "--zkhosts") {
		t.Errorf("--help: exit %d", r.code)
	}
}

// TestEnsemble: contenders each connected to a different member of a
// 3-node ensemble (followers answer from their own, possibly lagging, copy)
// still take turns, and a waiter behind a holder on another member starts
// as soon as the holder releases.
func TestEnsemble(t *testing.T) {
	zk := zktest.StartEnsemble(t, 3, zktest.SessionTimeouts(400*time.Millisecond, 20*time.Second))
	logPath := filepath.Join(t.TempDir(), "holders.log")
	var wg sync.WaitGroup
	for i, server := range zk.Servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for round := range 3 {
				who := fmt.Sprintf("member%d.r%d", i+1, round)
				args := append([]string{"-z", server.Addr(), "-i", "ensemble", "--"}, recorder(logPath, who, 100*time.Millisecond)...)
				if r := lockex(t, nil, args...); r.code != 0 {
					t.Errorf("%s: exit %d\n%s", who, r.code, r.stderr)
				}
			}
		}()
	}
	wg.Wait()
	checkOneAtATime(t, logPath, 9)
}

// TestConfigErrorInJSON (issue 13): a configuration error is written in the
// log format asked for, so that the first line a JSON log pipeline sees
// from a misconfigured pod is JSON; it names the bad value and exits 64.
func TestConfigErrorInJSON(t *testing.T) {
	for _, tc := range []struct {
		env  []string
		args []string
		bad  string
	}{
		{nil, []string{"--log-format", "json", "-c", "abc", "--", "true"}, "abc"},
		{[]string{"LOCKEX_LOG_FORMAT=json"}, []string{"--session-timeout", "soon", "--", "true"}, "soon"},
		{[]string{"LOCKEX_LOG_FORMAT=json", "LOCKEX_CONCURRENT=-2"}, []string{"--", "true"}, "-2"},
	} {
		r := lockex(t, tc.env, tc.args...)
		var line map[string]any
		if err := json.Unmarshal([]byte(r.stderr), &line); err != nil || strings.Count(r.stderr, "\n") != 1 {
			t.Errorf("%v %v: stderr %q is not one JSON line: %v", tc.env, tc.args, r.stderr, err)
			continue
		}
		if r.code != 64 || line["level"] != "ERROR" || !strings.Contains(fmt.Sprint(line["err"]), tc.bad) {
			t.Errorf("%v %v: exit %d, %v; want 64 and an error naming %q", tc.env, tc.args, r.code, line, tc.bad)
		}
	}
}
