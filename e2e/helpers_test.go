// Package e2e tests the real lockex binary, black-box, against real
// ZooKeeper servers and, for interoperability, the kazoo library.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"
	"github.com/lockex/lockex/internal/zktest"
)

// lockexBin is the binary under test, built once by TestMain, and
// lockexVersion the version it says it is (lockex --version).
var lockexBin, lockexVersion string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "lockex-e2e-")
	if err != nil {
		panic(err)
	}
	lockexBin = filepath.Join(dir, "lockex")
	build := exec.Command("go", "build", "-o", lockexBin, "../cmd/lockex")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building lockex:", err)
		os.Exit(1)
	}
	out, err := exec.Command(lockexBin, "--version").Output()
	f := strings.Fields(string(out))
	if err != nil || len(f) != 3 || f[0] != "lockex" {
		fmt.Fprintf(os.Stderr, "lockex --version: %q, %v\n", out, err)
		os.Exit(1)
	}
	lockexVersion = f[1]
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// result is how one lockex run ended.
type result struct {
	code   int
	stdout string
	stderr string
	took   time.Duration
}

// lockex runs the binary to the end (at most a minute) with env added to
// the test's environment.
func lockex(t *testing.T, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, lockexBin, args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String(), took: time.Since(start)}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("lockex %q: %v", args, err)
	}
	return r
}

// started is a lockex running in the background.
type started struct {
	cmd    *exec.Cmd
	stderr *bytes.Buffer
	done   chan struct{}
	code   int
}

func startLockex(t *testing.T, env []string, args ...string) *started {
	t.Helper()
	return startCommand(t, env, lockexBin, args...)
}

// startCmd starts cmd, which the test's end kills if it still runs.
func startCmd(t *testing.T, cmd *exec.Cmd) *started {
	t.Helper()
	s := &started{cmd: cmd, stderr: &bytes.Buffer{}, done: make(chan struct{})}
	if cmd.Stderr == nil {
		cmd.Stderr = s.stderr
	}
	// A process that outlives lockex may hold the stderr pipe open: that is
	// for the test to find, not a reason for Wait to hang.
	cmd.WaitDelay = time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = cmd.Wait()
		s.code = cmd.ProcessState.ExitCode()
		if ws := cmd.ProcessState.Sys().(syscall.WaitStatus); ws.Signaled() {
			s.code = 128 + int(ws.Signal())
		}
		close(s.done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-s.done
	})
	return s
}

// wait returns the exit code, failing the test after d.
func (s *started) wait(t *testing.T, d time.Duration) int {
	t.Helper()
	select {
	case <-s.done:
		return s.code
	case <-time.After(d):
		t.Fatalf("lockex still running after %s; its log:\n%s", d, s.stderr)
		return -1
	}
}

// zkClient is a plain client for looking at the znodes lockex leaves.
func zkClient(t *testing.T, hosts string) *zk.Conn {
	t.Helper()
	conn, _, err := zk.Connect(strings.Split(hosts, ","), 10*time.Second, zk.WithLogInfo(false), zk.WithLogger(quiet{}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Close)
	return conn
}

type quiet struct{}

func (quiet) Printf(string, ...any) {}

// children lists p's children; a missing p has none.
func children(t *testing.T, conn *zk.Conn, p string) []string {
	t.Helper()
	names, _, err := conn.Children(p)
	if err == zk.ErrNoNode {
		return nil
	}
	if err != nil {
		t.Fatalf("children %s: %v", p, err)
	}
	return names
}

// eventually polls cond every 20ms until it holds or d passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// startZK starts a standalone server that grants session timeouts up to 20s.
func startZK(t *testing.T) *zktest.Cluster {
	return zktest.Start(t, zktest.SessionTimeouts(400*time.Millisecond, 20*time.Second))
}

// recorder is a workload that appends "start|end <unix ns> <who> <token>"
// to a shared log, holding for hold in between.
func recorder(logPath, who string, hold time.Duration) []string {
	script := fmt.Sprintf(`echo "start $(date +%%s%%N) %s $LOCKEX_FENCING_TOKEN" >> %s; sleep %.3f; echo "end $(date +%%s%%N) %s $LOCKEX_FENCING_TOKEN" >> %s`,
		who, logPath, hold.Seconds(), who, logPath)
	return []string{"sh", "-c", script}
}

// stoppableRecorder is a recorder whose workload records its end also
// when a TERM cuts its hold short, and exits 0 then. lockex signals the
// workload's whole process group, so a record must not fork: a `date` in
// it would die of the same TERM and leave a record without its time. bash
// stamps with EPOCHREALTIME instead, and holds TERM back while it writes
// the start, so that a start is always followed by exactly one end.
func stoppableRecorder(logPath, who string, hold time.Duration) []string {
	script := fmt.Sprintf(`rec() { echo "$1 ${EPOCHREALTIME/[.,]/}000 %s $LOCKEX_FENCING_TOKEN" >> %s; }
trap 'stop=1' TERM
rec start
trap 'rec end; exit 0' TERM
[ -z "$stop" ] || { rec end; exit 0; }
sleep %.3f & wait
trap '' TERM
rec end`, who, logPath, hold.Seconds())
	return []string{"bash", "-c", script}
}

// interval is one holder's time under the lock, from a recorder's log.
type interval struct {
	who        string
	start, end int64
	token      int64
}

// readIntervals pairs the start and end records of each holder.
func readIntervals(t *testing.T, logPath string) []interval {
	t.Helper()
	f, err := os.Open(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	open := map[string]*interval{}
	var out []interval
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) != 4 {
			t.Fatalf("bad record %q", sc.Text())
		}
		ts, _ := strconv.ParseInt(fields[1], 10, 64)
		token, _ := strconv.ParseInt(fields[3], 10, 64)
		key := fields[2] + "/" + fields[3]
		switch fields[0] {
		case "start":
			open[key] = &interval{who: fields[2], start: ts, token: token}
		case "end":
			iv := open[key]
			if iv == nil {
				t.Fatalf("end without start: %q", sc.Text())
			}
			iv.end = ts
			out = append(out, *iv)
			delete(open, key)
		}
	}
	if len(open) > 0 {
		t.Fatalf("workloads that never ended: %v", open)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].start < out[j].start })
	return out
}

// maxOverlap is the most intervals that were open at one instant.
func maxOverlap(ivs []interval) int {
	type edge struct {
		at    int64
		delta int
	}
	var edges []edge
	for _, iv := range ivs {
		edges = append(edges, edge{iv.start, +1}, edge{iv.end, -1})
	}
	// At equal times an end comes before a start: touching is no overlap.
	sort.Slice(edges, func(i, j int) bool {
		if edges[i].at != edges[j].at {
			return edges[i].at < edges[j].at
		}
		return edges[i].delta < edges[j].delta
	})
	most, open := 0, 0
	for _, e := range edges {
		open += e.delta
		most = max(most, open)
	}
	return most
}
