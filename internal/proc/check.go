package proc

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"syscall"
)

// CheckOutputMax is how much of a check command's output RunCheck keeps:
// enough for the line that says why it failed, never a stream.
const CheckOutputMax = 4 << 10

// ErrReaperClosed is RunCheck's error once lockex is leaving.
var ErrReaperClosed = errors.New("proc: reaper closed")

// RunCheck runs path with argv and env as a health check (--health-cmd)
// and waits for its end: its exit code (128+N for signal N) and the first
// CheckOutputMax bytes of what it wrote to stdout and stderr, which are one
// pipe; stdin is /dev/null.
//
// It is not the workload and not an orphan: it leads a process group of
// its own (never the workload's), stays in lockex's cgroup (never the
// workload's), and is registered with r as the guardian is, so the stop's
// sweep of orphans passes it over, and its status comes from r's one
// wait4 loop rather than being taken by it (a second waiter would lose
// that race, lockex being PID 1 or not).
//
// When ctx ends first, its whole group gets SIGKILL, and so does its main
// process if it left the group, and RunCheck returns ctx's error once its
// main process is reaped. Either way, what it left in its group is sent
// SIGKILL as it ends: a check lives no longer than its timeout. What it started and moved out of its group (setsid) is not
// followed; as PID 1 or with --subreaper, lockex reaps it when it exits.
func (r *Reaper) RunCheck(ctx context.Context, path string, argv, env []string) (code int, output []byte, err error) {
	null, err := os.Open(os.DevNull)
	if err != nil {
		return 0, nil, err
	}
	defer null.Close()
	pr, pw, err := os.Pipe()
	if err != nil {
		return 0, nil, err
	}
	defer pr.Close()
	attr := &syscall.ProcAttr{
		Env:   env,
		Files: []uintptr{null.Fd(), pw.Fd(), pw.Fd()},
		Sys:   &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL},
	}

	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		pw.Close()
		return 0, nil, ErrReaperClosed
	}
	pid, err := forkExec(path, argv, attr)
	if err != nil {
		r.mu.Unlock()
		pw.Close()
		return 0, nil, startError(path, err)
	}
	// Registered before r.mu is let go: the status cannot be reaped as an
	// orphan's first.
	p := &Process{pid: pid, reaper: r, done: make(chan struct{}), gone: make(chan struct{})}
	r.trackLocked(p)
	r.mu.Unlock()
	pw.Close() // the check's copies are its own: EOF once they are gone

	var out limitedBuffer
	read := make(chan struct{})
	go func() {
		_, _ = io.Copy(&out, pr)
		close(read)
	}()

	select {
	case <-p.done:
	case <-ctx.Done():
		// Its main process too, should it have left its group (setpgid
		// is open to a group leader): else it runs on, and RunCheck,
		// and with it the checker, waits for it past the timeout.
		_ = p.Signal(syscall.SIGKILL)
		err = ctx.Err()
	case <-r.stopped:
		return 0, nil, ErrReaperClosed
	}
	select {
	case <-p.done:
	case <-r.stopped:
		return 0, nil, ErrReaperClosed
	}
	// What the check left in its group. A group's id is not handed out
	// again while a member holds it: a group with members is still the
	// check's, and one without answers ESRCH.
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	if err != nil {
		return 0, nil, err
	}
	// The output ends when the last holder of the pipe is gone: at once,
	// unless something left the group with it; then at ctx's end.
	select {
	case <-read:
	case <-ctx.Done():
		pr.Close()
		<-read
	}
	return p.code, out.Bytes(), nil
}

// limitedBuffer keeps the first CheckOutputMax bytes written to it and
// drops the rest, so the pipe is always drained. It is no bytes.Buffer,
// whose ReadFrom io.Copy would use instead of Write.
type limitedBuffer struct{ b bytes.Buffer }

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := CheckOutputMax - l.b.Len(); room > 0 {
		l.b.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func (l *limitedBuffer) Bytes() []byte { return l.b.Bytes() }
