package e2e

import (
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
)

// fdsOf names what pid's descriptors are open on, by descriptor.
func fdsOf(pid int) map[string]string {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	entries, _ := os.ReadDir(dir)
	fds := map[string]string{}
	for _, e := range entries {
		target, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err == nil {
			fds[e.Name()] = target
		}
	}
	return fds
}

// TestReviewGuardianWhileWaiting: the guardian Prepare starts while lockex
// waits holds nothing of lockex's but its stderr (no ZooKeeper socket, no
// probe listener, no pidfd or workload cgroup), and goes with a lockex that never
// runs its workload: one that gives up at -t (75), one stopped by SIGTERM
// (143), one SIGKILLed. A lockex -t 0 run from cron every minute must not
// pile up guardians.
func TestReviewGuardianWhileWaiting(t *testing.T) {
	zk := startZK(t)
	conn := zkClient(t, zk.Hosts())
	dir := t.TempDir()
	holder := startLockex(t, []string{"D=" + dir}, "-z", zk.Hosts(), "-i", "guard-wait", "--",
		"sh", "-c", `echo ready > "$D/ready"; while [ ! -e "$D/go" ]; do sleep 0.01; done`)
	waitFile(t, filepath.Join(dir, "ready"))
	t.Cleanup(func() {
		_ = os.WriteFile(filepath.Join(dir, "go"), nil, 0o644)
		holder.wait(t, 10*time.Second)
	})

	for _, tc := range []struct {
		name string
		end  func(s *started)
		code int
	}{
		{"gives up at -t", func(*started) {}, 75},
		{"SIGTERM", func(s *started) { _ = s.cmd.Process.Signal(syscall.SIGTERM) }, 143},
		{"SIGKILL", func(s *started) { _ = s.cmd.Process.Kill() }, 137},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startLockex(t, nil, "-z", zk.Hosts(), "-i", "guard-wait", "-t", "4s", "--http-addr", "127.0.0.1:0", "--", "true")
			eventually(t, 10*time.Second, "the second lockex waits", func() bool { return len(children(t, conn, "/lockex/guard-wait")) == 2 })
			var guards, others []int
			eventually(t, 10*time.Second, "the waiting lockex has its guardian", func() bool {
				guards, others = lockexChildren(s.cmd.Process.Pid)
				return len(guards) == 1
			})
			if len(others) != 0 {
				t.Errorf("a waiting lockex has children %v besides its guardian", others)
			}
			g := guards[0]
			var held []string
			for fd, target := range fdsOf(g) {
				if strings.HasPrefix(target, "socket:") || strings.Contains(target, "pidfd") || strings.Contains(target, "/lockex-") {
					held = append(held, fd+" -> "+target)
				}
			}
			sort.Strings(held)
			if len(held) > 0 {
				t.Errorf("the guardian %d of a waiting lockex holds %v (all: %v)", g, held, fdsOf(g))
			}
			tc.end(s)
			if code := s.wait(t, 15*time.Second); code != tc.code {
				t.Errorf("exit %d, want %d; log:\n%s", code, tc.code, s.stderr)
			}
			eventually(t, 5*time.Second, fmt.Sprintf("the guardian %d goes with lockex", g), func() bool { return !alive(g) })
			if log := s.stderr.String(); strings.Contains(log, "guardian") || strings.Contains(log, "killed what it started") {
				t.Errorf("the guardian of a lockex that ran nothing had something to say:\n%s", log)
			}
		})
	}
}

// sessionMembers lists the living processes of session sid.
func sessionMembers(sid int) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		s := string(b)
		// state ppid pgrp session ...
		fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(fields) > 3 && fields[3] == strconv.Itoa(sid) && fields[0] != "Z" {
			pids = append(pids, pid)
		}
	}
	return pids
}

// TestReviewSignalRacesPrepare: SIGTERM or SIGKILL reaches lockex from its
// first millisecond on, while the guardian that Prepare starts in the
// background may be anywhere between not yet forked and running. No
// guardian outlives lockex by more than a moment, whatever the timing: lockex
// runs in a session of its own, which must be empty soon after it exits.
func TestReviewSignalRacesPrepare(t *testing.T) {
	zk := startZK(t)
	dir := t.TempDir()
	holder := startLockex(t, []string{"D=" + dir}, "-z", zk.Hosts(), "-i", "guard-race", "--",
		"sh", "-c", `echo ready > "$D/ready"; while [ ! -e "$D/go" ]; do sleep 0.01; done`)
	waitFile(t, filepath.Join(dir, "ready"))
	t.Cleanup(func() {
		_ = os.WriteFile(filepath.Join(dir, "go"), nil, 0o644)
		holder.wait(t, 10*time.Second)
	})
	// The premise: a waiting lockex's guardian is in lockex's session.
	cmd := exec.Command(lockexBin, "-z", zk.Hosts(), "-i", "guard-race", "--", "true")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	s := startCmd(t, cmd)
	eventually(t, 10*time.Second, "the guardian of a waiting lockex is in its session", func() bool {
		guards, _ := lockexChildren(s.cmd.Process.Pid)
		return len(guards) == 1 && len(sessionMembers(s.cmd.Process.Pid)) == 2
	})
	_ = s.cmd.Process.Kill()
	s.wait(t, 10*time.Second)
	for i := 0; i < 24; i++ {
		sig := syscall.SIGTERM
		if i%2 == 1 {
			sig = syscall.SIGKILL
		}
		after := time.Duration(i/2) * 2 * time.Millisecond
		cmd := exec.Command(lockexBin, "-z", zk.Hosts(), "-i", "guard-race", "--", "true")
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		s := startCmd(t, cmd)
		time.Sleep(after)
		_ = s.cmd.Process.Signal(sig)
		code := s.wait(t, 15*time.Second)
		sid := s.cmd.Process.Pid
		eventually(t, 5*time.Second, fmt.Sprintf("lockex's session %d is empty after %s %s (exit %d)", sid, sig, after, code), func() bool {
			return len(sessionMembers(sid)) == 0
		})
	}
}
