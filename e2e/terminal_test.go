package e2e

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

// terminal is a pseudo-terminal whose slave side is the controlling
// terminal of a process started on it, as an interactive login would be.
type terminal struct {
	master *os.File
	sid    int // the session on it
	mu     sync.Mutex
	out    bytes.Buffer
}

// startOnTerminal runs name with args as a session leader on a new
// pseudo-terminal, with env added.
func startOnTerminal(t *testing.T, env []string, name string, args ...string) (*terminal, *started) {
	t.Helper()
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { master.Close() })
	var unlock int32
	if err := ioctl(master, syscall.TIOCSPTLCK, unsafe.Pointer(&unlock)); err != nil {
		t.Fatal(err)
	}
	var n uint32
	if err := ioctl(master, syscall.TIOCGPTN, unsafe.Pointer(&n)); err != nil {
		t.Fatal(err)
	}
	slave, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer slave.Close()

	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	term := &terminal{master: master}
	s := startCmd(t, cmd)
	term.sid = s.cmd.Process.Pid
	// Killing the session leader would leave its jobs running if the test
	// failed half-way: end the whole session.
	t.Cleanup(func() { killSession(s.cmd.Process.Pid) })
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := master.Read(buf)
			term.mu.Lock()
			term.out.Write(buf[:n])
			term.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	return term, s
}

// session lists the processes in session sid, each with the fields of
// /proc/PID/stat after the command name: state, ppid, pgrp, session, tty,
// the terminal's foreground group, ...
func session(sid int) map[int][]string {
	procs := map[int][]string{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(b)
		if f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:]); len(f) > 5 && f[3] == fmt.Sprint(sid) {
			var pid int
			fmt.Sscan(e.Name(), &pid)
			procs[pid] = f
		}
	}
	return procs
}

// sessionTable describes session sid's processes, for a failure message.
func sessionTable(sid int) string {
	var b strings.Builder
	for pid, f := range session(sid) {
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		wchan, _ := os.ReadFile(fmt.Sprintf("/proc/%d/wchan", pid))
		status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		var masks []string
		for _, line := range strings.Split(string(status), "\n") {
			if strings.HasPrefix(line, "Sig") || strings.HasPrefix(line, "ShdPnd") {
				masks = append(masks, strings.Join(strings.Fields(line), " "))
			}
		}
		fmt.Fprintf(&b, "pid %d state %s ppid %s pgrp %s foreground %s wchan %s %s: %s\n",
			pid, f[0], f[1], f[2], f[5], wchan, strings.Join(masks, " "), bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '}))
	}
	return b.String()
}

// killSession sends SIGKILL to every process in session sid.
func killSession(sid int) {
	for pid := range session(sid) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

func ioctl(f *os.File, req uintptr, arg unsafe.Pointer) error {
	if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), req, uintptr(arg)); errno != 0 {
		return errno
	}
	return nil
}

// expect waits until the terminal has shown want.
func (term *terminal) expect(t *testing.T, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(term.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("the terminal did not show %q; it shows:\n%s\nits session:\n%s", want, term, sessionTable(term.sid))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// String is everything the terminal has shown.
func (term *terminal) String() string {
	term.mu.Lock()
	defer term.mu.Unlock()
	return term.out.String()
}

// waitForeground waits until the terminal's foreground group is led by a
// process running command, so that a key typed next reaches that program
// and not, say, the shell that was about to exec it.
func (term *terminal) waitForeground(t *testing.T, command string) {
	t.Helper()
	eventually(t, 10*time.Second, command+" in the foreground", func() bool {
		for pid, f := range session(term.sid) {
			cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
			if f[5] == fmt.Sprint(pid) && strings.HasPrefix(string(cmdline), command+"\x00") {
				return true
			}
		}
		return false
	})
}

// typ types keys on the terminal.
func (term *terminal) typ(t *testing.T, keys string) {
	t.Helper()
	if _, err := term.master.WriteString(keys); err != nil {
		t.Fatal(err)
	}
}

// TestTerminalCtrlC: on a terminal the workload gets the foreground, so it
// can read the terminal and Ctrl-C reaches it; afterwards the shell has the
// terminal back and reads from it again.
func TestTerminalCtrlC(t *testing.T) {
	zk := startZK(t)
	script := fmt.Sprintf(`%s -z %s -i tty -- sh -c 'echo ready; read line; echo "read:$line"; exec sleep 1000'
echo "exit:$?"
read after
echo "after:$after"`, lockexBin, zk.Hosts())
	term, s := startOnTerminal(t, nil, "sh", "-c", script)
	term.expect(t, "ready")
	term.typ(t, "hello\n")
	term.expect(t, "read:hello")
	term.waitForeground(t, "sleep")
	term.typ(t, "\x03")
	term.expect(t, "exit:130")
	term.typ(t, "world\n")
	term.expect(t, "after:world")
	if code := s.wait(t, 10*time.Second); code != 0 {
		t.Fatalf("shell exit %d; the terminal shows:\n%s", code, term)
	}
}

// TestTerminalCtrlCWhileWaiting: Ctrl-C while lockex waits for the lock
// stops it with 130 and leaves no node behind.
func TestTerminalCtrlCWhileWaiting(t *testing.T) {
	zk := startZK(t)
	conn := zkClient(t, zk.Hosts())
	holder := startLockex(t, nil, "-z", zk.Hosts(), "-i", "tty-wait", "--", "sleep", "1000")
	eventually(t, 10*time.Second, "the holder holds", func() bool { return len(children(t, conn, "/lockex/tty-wait")) == 1 })
	term, waiter := startOnTerminal(t, nil, lockexBin, "-z", zk.Hosts(), "-i", "tty-wait", "--", "true")
	eventually(t, 10*time.Second, "lockex waits", func() bool { return len(children(t, conn, "/lockex/tty-wait")) == 2 })
	term.typ(t, "\x03")
	if code := waiter.wait(t, 10*time.Second); code != 130 {
		t.Fatalf("exit %d, want 130; the terminal shows:\n%s", code, term)
	}
	if n := len(children(t, conn, "/lockex/tty-wait")); n != 1 {
		t.Errorf("%d nodes after Ctrl-C, want the holder's alone", n)
	}
	_ = holder.cmd.Process.Signal(syscall.SIGTERM)
	holder.wait(t, 10*time.Second)
}

// TestTerminalJobControl: Ctrl-Z in an interactive shell stops the
// workload and lockex as one job, fg continues both, and Ctrl-C then ends
// them.
func TestTerminalJobControl(t *testing.T) {
	zk := startZK(t)
	dir := t.TempDir()
	term, shell := startOnTerminal(t, []string{"PS1=$ ", "HISTFILE=/dev/null", "D=" + dir},
		"bash", "--norc", "--noprofile", "-i")
	term.expect(t, "$ ")
	term.typ(t, fmt.Sprintf(`%s -z %s -i tty-job -- sh -c 'echo $$ > "$D/pid"; echo ready; exec sleep 1000'`+"\n", lockexBin, zk.Hosts()))
	term.expect(t, "ready")
	pid := 0
	fmt.Sscan(waitFile(t, filepath.Join(dir, "pid")), &pid)
	lockexPid, _ := statOf(pid)
	term.waitForeground(t, "sleep")

	term.typ(t, "\x1a")
	term.expect(t, "Stopped")
	for _, p := range []int{pid, lockexPid} {
		if _, state := statOf(p); state != 'T' {
			t.Errorf("pid %d in state %c after Ctrl-Z, want T (stopped)", p, state)
		}
	}
	term.typ(t, "fg\n")
	eventually(t, 10*time.Second, "fg continued the workload and lockex", func() bool {
		_, w := statOf(pid)
		_, l := statOf(lockexPid)
		return w == 'S' && l != 'T'
	})
	term.typ(t, "\x03")
	term.typ(t, "echo exit:$?\n")
	term.expect(t, "exit:130")
	term.typ(t, "exit\n")
	if code := shell.wait(t, 10*time.Second); code != 0 {
		t.Fatalf("shell exit %d; the terminal shows:\n%s", code, term)
	}
}

// TestTerminalStoppedPastTheSession: Ctrl-Z stops the workload and lockex
// for longer than the session lasts, and the next holder starts. fg then
// continues lockex, which must not continue the workload beside the next
// holder's before it has seen the loss and killed it.
func TestTerminalStoppedPastTheSession(t *testing.T) {
	zk := startZK(t)
	conn := zkClient(t, zk.Hosts())
	dir := t.TempDir()
	env := []string{"D=" + dir}
	// A workload that shows within a millisecond that it runs.
	if err := os.WriteFile(filepath.Join(dir, "tick.py"), []byte(`
import os, time
open(os.environ["D"] + "/pid", "w").write(str(os.getpid()))
print("ready", flush=True)
with open(os.environ["D"] + "/ticks", "a") as f:
    while True:
        f.write("%d\n" % time.time_ns())
        f.flush()
        time.sleep(0.0005)
`), 0o644); err != nil {
		t.Fatal(err)
	}
	term, shell := startOnTerminal(t, []string{"PS1=$ ", "HISTFILE=/dev/null", "D=" + dir},
		"bash", "--norc", "--noprofile", "-i")
	term.expect(t, "$ ")
	term.typ(t, fmt.Sprintf(`%s -z %s -i tty-stop --session-timeout 2s --kill-grace 500ms -- /usr/bin/python3 "$D/tick.py"`+"\n",
		lockexBin, zk.Hosts()))
	term.expect(t, "ready")
	pid := 0
	fmt.Sscan(waitFile(t, filepath.Join(dir, "pid")), &pid)
	lockexPid, _ := statOf(pid)
	next := startLockex(t, env, "-z", zk.Hosts(), "-i", "tty-stop", "--session-timeout", "2s", "--kill-grace", "500ms", "--",
		"sh", "-c", `date +%s%N > "$D/next"; sleep 3`)
	eventually(t, 10*time.Second, "the next contender waits", func() bool { return len(children(t, conn, "/lockex/tty-stop")) == 2 })

	term.typ(t, "\x1a")
	term.expect(t, "Stopped")
	var nextStart int64
	fmt.Sscan(waitFile(t, filepath.Join(dir, "next")), &nextStart)
	term.typ(t, "fg\n")
	eventually(t, 20*time.Second, "lockex exits", func() bool { return !alive(lockexPid) })
	if after, last := ticksAfter(t, filepath.Join(dir, "ticks"), nextStart); after > 0 {
		t.Errorf("the workload ran beside the next holder's: %d ticks after it started, the last %s after; the terminal shows:\n%s",
			after, time.Duration(last-nextStart).Round(time.Millisecond), term)
	}
	if code := next.wait(t, 20*time.Second); code != 0 {
		t.Fatalf("next exit %d; log:\n%s", code, next.stderr)
	}
	term.typ(t, "exit\n")
	shell.wait(t, 10*time.Second)
}
