package e2e

import (
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// killLeftovers SIGKILLs what a test's checks left, named lo-mark, so that
// a failed test leaves nothing running.
func killLeftovers(mark string) {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		if b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "comm")); err == nil && string(b) == "lo-"+mark+"\n" {
			if pid, err := strconv.Atoi(e.Name()); err == nil {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
}

// TestReviewHealthCmdLeavesGroup (review): a --health-cmd whose main
// process leaves the process group lockex made for it and hangs. At its
// timeout it must still be killed and count as a failure: the workload is
// stopped, lockex exits 77 (it does not hang, nor keep a broken holder's
// lock for as long as the check likes). As PID 1 and with --subreaper,
// nothing of the check is left after lockex; without either, the child it
// moved into another group escapes (design.md §4.4, not covered).
func TestReviewHealthCmdLeavesGroup(t *testing.T) {
	zk := startZK(t)
	check, err := filepath.Abs("testdata/review_health_leave_group.py")
	if err != nil {
		t.Fatal(err)
	}
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range append(modes, mode{name: "plain", plain: true}) {
		t.Run(m.name, func(t *testing.T) {
			dir := t.TempDir()
			mark := strconv.Itoa(900000 + rand.IntN(99999))
			t.Cleanup(func() { killLeftovers(mark) })
			if err := os.Symlink(sleep, filepath.Join(dir, "lo-"+mark)); err != nil {
				t.Fatal(err)
			}
			checks := filepath.Join(dir, "checks")
			s := m.start(t, nil, "-z", zk.Hosts(), "-i", "review-health-leave-"+m.name, "--log-format", "json",
				"--health-cmd", python+" "+check+" "+dir+" "+mark, "--health-period", "100ms", "--health-timeout", "1s",
				"--health-failure-threshold", "1", "--", "sleep", "1000")
			eventually(t, 15*time.Second, "three checks", func() bool { return countLines(checks, "check") >= 3 })
			touch(t, filepath.Join(dir, "hang"))
			if code := s.wait(t, 60*time.Second); code != 77 {
				t.Fatalf("exit %d, want 77; log:\n%s", code, s.stderr)
			}
			if err := lineWith(t, s, "workload unhealthy; stopping it and releasing the lock")["err"]; err != "workload failed its health check 1 times in a row: no answer within 1s" {
				t.Errorf("err %q", err)
			}
			if !m.plain {
				eventually(t, 10*time.Second, "nothing left of the checks after lockex", func() bool { return leftovers(mark) == 0 })
			}
		})
	}
}

// TestReviewHealthURLStalledBody (review): the workload answers its health
// check with 200, then hangs in the body. The check has not ended by its
// timeout: it fails, and the hung workload is stopped (77), rather than
// passing at the timeout and keeping the lock from the standbys.
func TestReviewHealthURLStalledBody(t *testing.T) {
	zk := startZK(t)
	dir := t.TempDir()
	addr := freePort(t)
	_, port, _ := net.SplitHostPort(addr)
	s := startLockex(t, nil, "-z", zk.Hosts(), "-i", "review-health-stall", "--log-format", "json",
		"--health-url", "http://"+addr+"/health", "--health-period", "100ms", "--health-timeout", "1s",
		"--health-failure-threshold", "2", "--health-start-period", "30s", "--", python, "testdata/review_stall_server.py", port, dir)
	log := filepath.Join(dir, "log")
	eventually(t, 15*time.Second, "three checks", func() bool { return countLines(log, "check") >= 3 })
	touch(t, filepath.Join(dir, "stall"))
	if code := s.wait(t, 60*time.Second); code != 77 {
		t.Fatalf("exit %d, want 77; log:\n%s", code, s.stderr)
	}
	if err, _ := lineWith(t, s, "workload unhealthy; stopping it and releasing the lock")["err"].(string); err != "workload failed its health check 2 times in a row: no answer within 1s" {
		t.Errorf("err %q", err)
	}
}

// TestReviewHealthCmdDaemon (review): each --health-cmd starts a daemon
// (setsid, out of its group and session) and passes. As PID 1 and with
// --subreaper, the daemons are handed to lockex, and design.md §4.4 says
// they count as orphans of the workload at its next stop: the workload's
// own exit must then still end the run with its code, the daemons
// stopped, none left after lockex, and lockex not hang on them.
func TestReviewHealthCmdDaemon(t *testing.T) {
	zk := startZK(t)
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			dir := t.TempDir()
			mark := strconv.Itoa(900000 + rand.IntN(99999))
			t.Cleanup(func() { killLeftovers(mark) })
			daemon := filepath.Join(dir, "lo-"+mark)
			if err := os.Symlink(sleep, daemon); err != nil {
				t.Fatal(err)
			}
			checks := filepath.Join(dir, "checks")
			s := m.start(t, nil, "-z", zk.Hosts(), "-i", "review-health-daemon-"+m.name, "--log-format", "json",
				// The check ends only once its daemon is out of its group
				// (the daemon's shell writes out after setsid): the group
				// is killed as the check ends, and a daemon still in it
				// would die with it.
				"--health-cmd", "sh -c 'echo check >> "+checks+"; out="+dir+"/out-$$; setsid sh -c \"echo > $out; exec "+daemon+" 1000\" </dev/null >/dev/null 2>&1 & while [ ! -e $out ]; do sleep 0.01; done; exit 0'",
				"--health-period", "100ms", "--health-timeout", "5s", "--health-failure-threshold", "1",
				"--", "sh", "-c", "while [ ! -e "+dir+"/end ]; do sleep 0.05; done; exit 3")
			eventually(t, 15*time.Second, "three checks", func() bool { return countLines(checks, "check") >= 3 })
			eventually(t, 15*time.Second, "a daemon of a check runs", func() bool { return leftovers(mark) > 0 })
			touch(t, filepath.Join(dir, "end"))
			if code := s.wait(t, 60*time.Second); code != 3 {
				t.Fatalf("exit %d, want the workload's 3; log:\n%s", code, s.stderr)
			}
			eventually(t, 10*time.Second, "no daemon of a check left after lockex", func() bool { return leftovers(mark) == 0 })
		})
	}
}

// TestReviewHealthBadValues (review): every bad health-check value is exit
// 64 with one line that names it, before ZooKeeper is asked (the hosts
// given are closed).
func TestReviewHealthBadValues(t *testing.T) {
	zk := closedPort(t)
	notExec := filepath.Join(t.TempDir(), "check")
	if err := os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		env   []string
		args  []string
		names string
	}{
		{nil, []string{"--health-start-period", "-1"}, `\"-1\"`},
		{nil, []string{"--health-timeout", "abc"}, `\"abc\"`},
		{nil, []string{"--health-timeout", "0"}, `--health-timeout \"0s\"`},
		{nil, []string{"--health-period", "-2s"}, `\"-2s\"`},
		{nil, []string{"--health-failure-threshold", "1.5"}, `\"1.5\"`},
		{nil, []string{"--health-failure-threshold", "-1"}, `--health-failure-threshold \"-1\"`},
		{nil, []string{"--health-url", "http://"}, `\"http://\"`},
		{nil, []string{"--health-url", "ftp://127.0.0.1/"}, `\"ftp://127.0.0.1/\"`},
		{nil, []string{"--health-url", "http://127.0.0.1:0/"}, `\"http://127.0.0.1:0/\"`},
		{nil, []string{"--health-cmd", notExec}, notExec},
		{nil, []string{"--health-cmd", "/tmp"}, `\"/tmp\"`},
		{nil, []string{"--health-cmd", "check `id`"}, "check `id`"},
		{nil, []string{"--health-cmd", `check "$HOME"`}, `check \\\"$HOME\\\"`},
		{[]string{"LOCKEX_HEALTH_PERIOD=soon"}, nil, `LOCKEX_HEALTH_PERIOD=\"soon\"`},
		{[]string{"LOCKEX_HEALTH_URL=127.0.0.1:8080"}, nil, `LOCKEX_HEALTH_URL: \"127.0.0.1:8080\"`},
	} {
		t.Run(strings.Join(append(tc.env, tc.args...), " "), func(t *testing.T) {
			args := append(append([]string{"-z", zk, "-T", "1"}, tc.args...), "--", "true")
			r := lockex(t, tc.env, args...)
			if r.code != 64 || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 || !strings.Contains(r.stderr, tc.names) {
				t.Errorf("exit %d, stderr %q; want 64 and one line naming %s", r.code, r.stderr, tc.names)
			}
		})
	}
}
