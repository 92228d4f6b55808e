package bench

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// event is one line of lockex's JSON log: its message, its own timestamp
// (nanoseconds, on this machine's clock, the same one the bench reads) and
// the rest of its attributes.
type event struct {
	msg   string
	at    time.Time
	attrs map[string]any
}

// lockex is one lockex process run by the bench, its log parsed as it
// comes. Its stdin is a pipe whose other end the bench holds: closing that
// ends a hold workload.
type lockex struct {
	t       testing.TB
	cmd     *exec.Cmd
	stdin   *os.File
	spawned time.Time // just before the fork
	// onEvent, if set, is called for each log line, on the reading
	// goroutine; it must not block.
	onEvent func(*lockex, event)

	mu      sync.Mutex
	events  []event
	raw     []string    // every stderr line, for error messages
	exits   []time.Time // "exit <ns>" lines of a hold workload
	changed chan struct{}
	reaped  time.Time // just after wait4 returned
	code    int

	// done closes once the process is reaped and its output read to the end.
	done chan struct{}
}

// run starts the lockex binary with args and env added to the bench's
// environment; the test's end kills it if it still runs.
func (b *bench) run(args, env []string, onEvent func(*lockex, event)) *lockex {
	b.t.Helper()
	l, err := b.start(args, env, onEvent)
	if err != nil {
		b.t.Fatalf("starting lockex %q: %v", args, err)
	}
	return l
}

func (b *bench) start(args, env []string, onEvent func(*lockex, event)) (*lockex, error) {
	return b.startArgv(append([]string{b.bin}, args...), env, onEvent)
}

// startArgv is start for a command that runs lockex: argv[0] may be
// another program that execs it or forks it.
func (b *bench) startArgv(argv, env []string, onEvent func(*lockex, event)) (*lockex, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(b.env(), env...)
	// Plain pipes, not StdoutPipe: Wait then returns the moment the process
	// is reaped, whatever the readers are doing.
	var ends [3][2]*os.File
	for i := range ends {
		r, w, err := os.Pipe()
		if err != nil {
			return nil, err
		}
		ends[i] = [2]*os.File{r, w}
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = ends[0][0], ends[1][1], ends[2][1]
	l := &lockex{t: b.t, cmd: cmd, stdin: ends[0][1], onEvent: onEvent, changed: make(chan struct{}), done: make(chan struct{})}
	l.spawned = time.Now()
	err := cmd.Start()
	// The child has its own copies now.
	ends[0][0].Close()
	ends[1][1].Close()
	ends[2][1].Close()
	if err != nil {
		ends[0][1].Close()
		ends[1][0].Close()
		ends[2][0].Close()
		return nil, err
	}
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); l.readStdout(ends[1][0]) }()
	go func() { defer wg.Done(); l.readStderr(ends[2][0]) }()
	go func() {
		defer wg.Done()
		_ = cmd.Wait()
		now := time.Now()
		code := cmd.ProcessState.ExitCode()
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			code = 128 + int(ws.Signal())
		}
		l.mu.Lock()
		l.reaped, l.code = now, code
		l.mu.Unlock()
	}()
	go func() {
		wg.Wait()
		l.stdin.Close()
		close(l.done)
	}()
	b.t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-l.done
	})
	return l, nil
}

// env is the bench's environment without what lockex would read as its
// configuration.
func (b *bench) env() []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "LOCKEX_") && !strings.HasPrefix(kv, "ZKHOSTS=") {
			out = append(out, kv)
		}
	}
	return out
}

func (l *lockex) readStdout(r io.ReadCloser) {
	defer r.Close()
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "exit "); ok {
			if ns, err := strconv.ParseInt(v, 10, 64); err == nil {
				l.mu.Lock()
				l.exits = append(l.exits, time.Unix(0, ns))
				l.notifyLocked()
				l.mu.Unlock()
			}
		}
	}
}

func (l *lockex) readStderr(r io.ReadCloser) {
	defer r.Close()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		var ev event
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err == nil {
			ev.attrs = m
			ev.msg, _ = m["msg"].(string)
			if s, ok := m["time"].(string); ok {
				ev.at, _ = time.Parse(time.RFC3339Nano, s)
			}
		}
		l.mu.Lock()
		l.raw = append(l.raw, line)
		if ev.msg != "" {
			l.events = append(l.events, ev)
		}
		l.notifyLocked()
		l.mu.Unlock()
		if ev.msg != "" && l.onEvent != nil {
			l.onEvent(l, ev)
		}
	}
}

func (l *lockex) notifyLocked() {
	close(l.changed)
	l.changed = make(chan struct{})
}

// await returns the first log event with msg, waiting at most d for it.
func (l *lockex) await(msg string, d time.Duration) (event, error) {
	deadline := time.After(d)
	for {
		l.mu.Lock()
		for _, ev := range l.events {
			if ev.msg == msg {
				l.mu.Unlock()
				return ev, nil
			}
		}
		changed := l.changed
		l.mu.Unlock()
		select {
		case <-changed:
		case <-l.done:
			// The last lines are read by now: one more look, then give up.
			if ev, ok := l.find(msg); ok {
				return ev, nil
			}
			return event{}, fmt.Errorf("lockex exited (code %d) without logging %q; its log:\n%s", l.exitCode(), msg, l.log())
		case <-deadline:
			return event{}, fmt.Errorf("lockex logged no %q within %s; its log:\n%s", msg, d, l.log())
		}
	}
}

func (l *lockex) find(msg string) (event, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, ev := range l.events {
		if ev.msg == msg {
			return ev, true
		}
	}
	return event{}, false
}

// awaitExit returns the time a hold workload printed as its exit.
func (l *lockex) awaitExit(d time.Duration) (time.Time, error) {
	deadline := time.After(d)
	for {
		l.mu.Lock()
		if len(l.exits) > 0 {
			at := l.exits[0]
			l.mu.Unlock()
			return at, nil
		}
		changed := l.changed
		l.mu.Unlock()
		select {
		case <-changed:
		case <-l.done:
			l.mu.Lock()
			defer l.mu.Unlock()
			if len(l.exits) > 0 {
				return l.exits[0], nil
			}
			return time.Time{}, fmt.Errorf("workload printed no exit time; lockex's log:\n%s", strings.Join(l.raw, "\n"))
		case <-deadline:
			return time.Time{}, fmt.Errorf("workload printed no exit time within %s; lockex's log:\n%s", d, l.log())
		}
	}
}

// wait waits at most d for the process to end and its output to be read.
func (l *lockex) wait(d time.Duration) error {
	select {
	case <-l.done:
		return nil
	case <-time.After(d):
		return fmt.Errorf("lockex still running after %s; its log:\n%s", d, l.log())
	}
}

// release ends a hold workload (its stdin reaches end of file).
func (l *lockex) release() { l.stdin.Close() }

func (l *lockex) exitCode() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.code
}

func (l *lockex) reapedAt() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.reaped
}

func (l *lockex) log() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.raw, "\n")
}

func (l *lockex) pid() int { return l.cmd.Process.Pid }

// need is await that fails the bench on error.
func (l *lockex) need(msg string, d time.Duration) event {
	l.t.Helper()
	ev, err := l.await(msg, d)
	if err != nil {
		l.t.Fatal(err)
	}
	return ev
}

// needExit is awaitExit that fails the bench on error.
func (l *lockex) needExit(d time.Duration) time.Time {
	l.t.Helper()
	at, err := l.awaitExit(d)
	if err != nil {
		l.t.Fatal(err)
	}
	return at
}

// end is wait that fails the bench on error.
func (l *lockex) end(d time.Duration) {
	l.t.Helper()
	if err := l.wait(d); err != nil {
		l.t.Fatal(err)
	}
}
