package proc

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// These tests fork real processes from the test binary, which the Reaper
// makes a subreaper. Nothing here may use os/exec: its Wait would race the
// Reaper, which is the point of the Reaper.

// TestMain lets the test binary, re-executed, be the workloads' guardian,
// as lockex's main does.
func TestMain(m *testing.M) {
	if os.Getenv(leaveGroupEnv) != "" {
		leaveGroup()
	}
	if code, ok := Guardian(os.Args); ok {
		os.Exit(code)
	}
	os.Exit(m.Run())
}

func newReaper(t *testing.T) *Reaper {
	t.Helper()
	r, err := NewReaper(slog.New(slog.NewTextHandler(io.Discard, nil)), true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

func sh(t *testing.T, r *Reaper, script string) *Process {
	t.Helper()
	p, err := r.Start("/bin/sh", []string{"sh", "-c", script}, os.Environ())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func waitDone(t *testing.T, p *Process) int {
	t.Helper()
	select {
	case <-p.Done():
		return p.ExitCode()
	case <-time.After(10 * time.Second):
		t.Fatalf("pid %d did not end", p.Pid())
		return -1
	}
}

func TestExitCode(t *testing.T) {
	r := newReaper(t)
	for _, tc := range []struct {
		script string
		want   int
	}{
		{"exit 0", 0}, {"exit 1", 1}, {"exit 42", 42}, {"exit 255", 255},
		{"kill -TERM $$", 143}, {"kill -KILL $$", 137},
	} {
		t.Run(tc.script, func(t *testing.T) {
			if got := waitDone(t, sh(t, r, tc.script)); got != tc.want {
				t.Errorf("exit code %d, want %d", got, tc.want)
			}
		})
	}
}

// TestStatusNeverStolen: many workloads end at once while orphans they
// leave are reaped by the same wait4(-1) loop; each workload's own status
// still reaches its Process.
func TestStatusNeverStolen(t *testing.T) {
	r := newReaper(t)
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for i := range 200 {
		wg.Go(func() {
			code := i % 256
			p, err := r.Start("/bin/sh", []string{"sh", "-c", fmt.Sprintf(`sh -c 'true &'; exit %d`, code)}, os.Environ())
			if err != nil {
				errs <- err
				return
			}
			select {
			case <-p.Done():
				if p.ExitCode() != code {
					errs <- fmt.Errorf("workload %d: exit code %d, want %d", p.Pid(), p.ExitCode(), code)
				}
			case <-time.After(30 * time.Second):
				errs <- fmt.Errorf("workload %d never reported its end", p.Pid())
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestStop: what the workload leaves behind is reached by SignalAll, by
// KillAll if it ignores the signal, and Gone closes once all of it is gone.
func TestStop(t *testing.T) {
	r := newReaper(t)
	for _, tc := range []struct {
		name, script string
		ignoresTERM  bool
	}{
		{"nothing left", "exit 0", false},
		{"background child", "sleep 1000 & exit 0", false},
		{"ignores TERM", `trap "" TERM; sleep 1000 & exit 0`, true},
		// The main process waits until the daemon ignores TERM.
		{"own session", `setsid sh -c 'trap "" TERM; touch "$READY"; sleep 1000' &
			while [ ! -e "$READY" ]; do sleep 0.01; done`, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("READY", t.TempDir()+"/ready")
			p := sh(t, r, tc.script)
			waitDone(t, p)
			p.SignalAll(syscall.SIGTERM)
			if tc.ignoresTERM {
				select {
				case <-p.Gone():
					t.Fatal("gone after SIGTERM, which it ignores")
				case <-time.After(200 * time.Millisecond):
				}
				p.KillAll()
			}
			select {
			case <-p.Gone():
			case <-time.After(5 * time.Second):
				t.Fatal("not gone 5s after the last signal")
			}
			if syscall.Kill(-p.Pid(), 0) == nil {
				t.Error("the workload's process group still has members")
			}
			// The guardian, also a child of the test, runs on.
			r.mu.Lock()
			r.reapLocked()
			left, _ := r.childrenLocked()
			r.mu.Unlock()
			if len(left) > 0 {
				t.Errorf("children of the test still running: %v", left)
			}
		})
	}
}

// TestKillRunningWorkload: KillAll of a workload whose main process still
// runs (as when the lock is lost) ends it too, and Gone closes only once
// its exit status is known.
func TestKillRunningWorkload(t *testing.T) {
	r := newReaper(t)
	ready := t.TempDir() + "/ready"
	t.Setenv("READY", ready)
	p := sh(t, r, `trap "" TERM; touch "$READY"; sleep 1000`)
	for {
		if _, err := os.Stat(ready); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	p.KillAll()
	<-p.Gone()
	select {
	case <-p.Done():
	default:
		t.Fatal("Gone closed while the main process runs")
	}
	if got := p.ExitCode(); got != 137 {
		t.Errorf("exit code %d, want 137 (SIGKILL)", got)
	}
}

func TestStatOf(t *testing.T) {
	st, ok := statOf(os.Getpid())
	if !ok || st.ppid != os.Getppid() || st.pgrp != syscall.Getpgrp() || !strings.ContainsRune("RS", rune(st.state)) {
		t.Errorf("statOf(self) = %+v, %v; want ppid %d, pgrp %d, state R or S", st, ok, os.Getppid(), syscall.Getpgrp())
	}
	if _, ok := statOf(1 << 30); ok {
		t.Error("statOf a pid that does not exist succeeded")
	}
}
