package proc

import (
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The workload's end learnt from its pidfd (reaper.go, watchExit): alone,
// beside the SIGCHLD loop that reaps the orphans, and never after Close.

// pidfds counts this process's open pidfds.
func pidfds(t *testing.T) int {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, fd := range fds {
		link, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name()))
		if err == nil && (link == "anon_inode:[pidfd]" || strings.HasPrefix(link, "pidfd:")) {
			n++
		}
	}
	return n
}

// needPidfd fails the test if p was started without a pidfd: the kernel
// (before Linux 5.3) or a seccomp filter refused pidfd_open, and what the
// test is about cannot happen.
func needPidfd(t *testing.T, p *Process) {
	t.Helper()
	p.reaper.mu.Lock()
	defer p.reaper.mu.Unlock()
	if p.pidfd == nil {
		t.Fatalf("workload %d has no pidfd: pidfd_open refused (Linux before 5.3, or a seccomp filter)", p.Pid())
	}
}

// TestExitSeenByPidfd: with SIGCHLD no longer delivered to the Reaper, the
// pidfd alone tells that the workload ended, and its status is the right
// one.
func TestExitSeenByPidfd(t *testing.T) {
	r := newReaper(t)
	signal.Stop(r.sigchld) // only the pidfd is left to tell
	for _, tc := range []struct {
		script string
		want   int
	}{
		{"exit 0", 0}, {"exit 3", 3}, {"exit 255", 255},
		{"kill -TERM $$", 143}, {"kill -KILL $$", 137},
	} {
		t.Run(tc.script, func(t *testing.T) {
			p := sh(t, r, tc.script)
			needPidfd(t, p)
			if got := waitDone(t, p); got != tc.want {
				t.Errorf("exit code %d, want %d", got, tc.want)
			}
		})
	}
}

// TestOrphansReapedBesidePidfd: the pidfd reports the workload's own end;
// the orphans it leaves to lockex (a subreaper here) are still reaped, by
// the SIGCHLD loop, and none stays a zombie.
func TestOrphansReapedBesidePidfd(t *testing.T) {
	r := newReaper(t)
	pidFile := t.TempDir() + "/orphan"
	t.Setenv("ORPHAN", pidFile)
	p := sh(t, r, `sleep 0.2 & echo $! > "$ORPHAN"; exit 3`)
	needPidfd(t, p)
	if got := waitDone(t, p); got != 3 {
		t.Errorf("exit code %d, want 3", got)
	}
	orphan := readPid(t, pidFile)
	if !within(10*time.Second, func() bool { _, ok := statOf(orphan); return !ok }) {
		st, _ := statOf(orphan)
		t.Fatalf("orphan %d not reaped 10s after its parent's end (state %c)", orphan, st.state)
	}
}

// TestNoReapingAfterClose: once the Reaper is closed, nothing of it waits
// for the workload, the pidfd watcher included: a workload that ends after
// Close stays a zombie for whoever reaps next (lockex's own exit, in
// lockex), its Done stays open, and its pidfd is closed.
func TestNoReapingAfterClose(t *testing.T) {
	before := pidfds(t)
	r, closeReaper := closeLater(t)
	noConfinement(r) // no guardian to kill the workload as the Reaper closes
	p := sh(t, r, "exec sleep 1000")
	needPidfd(t, p)
	closeReaper()
	if err := syscall.Kill(p.Pid(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	zombie := func() bool { st, ok := statOf(p.Pid()); return ok && st.state == 'Z' }
	if !within(10*time.Second, zombie) {
		t.Fatalf("workload %d not a zombie after SIGKILL: reaped after Close", p.Pid())
	}
	select {
	case <-p.Done():
		t.Fatal("Done closed for an end that came after Close")
	case <-time.After(300 * time.Millisecond): // a reap after Close would show by then
	}
	if !zombie() {
		t.Fatalf("workload %d reaped after Close", p.Pid())
	}
	if code := waitClosed(t, p); code != 137 {
		t.Errorf("exit code %d, want 137 (SIGKILL)", code)
	}
	if !within(10*time.Second, func() bool { return pidfds(t) == before }) {
		t.Errorf("%d pidfds open after Close, %d before the workload", pidfds(t), before)
	}
}

// TestPidfdsClosed: every workload's pidfd is closed once it has ended,
// whether its end was reaped through the pidfd or through SIGCHLD.
func TestPidfdsClosed(t *testing.T) {
	before := pidfds(t)
	r := newReaper(t)
	for range 50 {
		p := sh(t, r, "exit 0")
		needPidfd(t, p)
		waitDone(t, p)
	}
	if !within(10*time.Second, func() bool { return pidfds(t) == before }) {
		t.Errorf("%d pidfds open after 50 workloads ended, %d before", pidfds(t), before)
	}
}
