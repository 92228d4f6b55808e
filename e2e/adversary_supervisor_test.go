package e2e

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// stalledPipe is a pipe that nobody drains, as stderr is when the log
// collector stalls or a container's log driver blocks.
type stalledPipe struct {
	r, w *os.File
}

func newStalledPipe(t *testing.T) *stalledPipe {
	t.Helper()
	var fds [2]int
	if err := syscall.Pipe2(fds[:], syscall.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	p := &stalledPipe{r: os.NewFile(uintptr(fds[0]), "stalled-r"), w: os.NewFile(uintptr(fds[1]), "stalled-w")}
	t.Cleanup(func() { p.r.Close(); p.w.Close() })
	return p
}

// reopen opens another file description of one end of the pipe, with
// O_NONBLOCK set on it alone: lockex's stderr, the same pipe, keeps
// blocking.
func (p *stalledPipe) reopen(t *testing.T, f *os.File, mode int) int {
	t.Helper()
	fd, err := syscall.Open("/proc/self/fd/"+strconv.Itoa(int(f.Fd())), mode|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	return fd
}

// fill writes '#' into the pipe until it takes no more, and returns how
// much it took.
func (p *stalledPipe) fill(t *testing.T) int {
	t.Helper()
	fd := p.reopen(t, p.w, syscall.O_WRONLY)
	defer syscall.Close(fd)
	total := 0
	// A 64 KiB pipe takes 16 pages, then at most a page byte by byte; a
	// pipe can be made at most 1 MiB by an unprivileged user.
	for _, chunk := range []int{4096, 1} {
		buf := bytes.Repeat([]byte("#"), chunk)
		for i := 0; i < 1<<20/chunk+1; i++ {
			n, err := syscall.Write(fd, buf)
			if err == syscall.EAGAIN {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			total += n
		}
	}
	return total
}

// filler is what fill wrote, and no log line has.
var filler = regexp.MustCompile(`#{64,}`)

// drain reads what the pipe holds, without the filler, once the test no
// longer needs it to be full: lockex's log, for a failure's message.
func (p *stalledPipe) drain(t *testing.T) string {
	t.Helper()
	fd := p.reopen(t, p.r, syscall.O_RDONLY)
	defer syscall.Close(fd)
	var out bytes.Buffer
	buf := make([]byte, 64<<10)
	for i := 0; i < 1000; i++ {
		n, err := syscall.Read(fd, buf)
		if n <= 0 || err != nil {
			break
		}
		out.Write(buf[:n])
	}
	return filler.ReplaceAllString(out.String(), "")
}

// freePort is a port on 127.0.0.1 that was free a moment ago.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// metricValue scrapes addr's /metrics for one series' value; ok is false
// if it cannot.
func metricValue(addr, series string) (float64, bool) {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + addr + "/metrics")
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if name, value, ok := strings.Cut(line, " "); ok && strings.HasPrefix(name, series) {
			v, err := strconv.ParseFloat(value, 64)
			return v, err == nil
		}
	}
	return 0, false
}

// TestStderrStalled: the holder's stderr is a pipe nobody reads. An
// operator deletes its node while another lockex waits. The holder must
// stop its workload before the waiter's starts, and exit 76, although it
// cannot write a single log line; the lines it could not write are counted
// in lockex_log_lines_dropped_total.
func TestStderrStalled(t *testing.T) {
	zk := startZK(t)
	conn := zkClient(t, zk.Hosts())
	for _, tc := range []struct {
		name string
		// fullBefore: full before lockex starts; else filled once its
		// workload runs (lockex wrote its first lines already).
		fullBefore bool
	}{
		{"full before the start", true},
		{"fills while holding", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := "stalled" + strconv.FormatBool(tc.fullBefore)
			logPath := filepath.Join(t.TempDir(), "log")
			pipe := newStalledPipe(t)
			if tc.fullBefore {
				t.Logf("pipe full after %d bytes", pipe.fill(t))
			}
			httpAddr := freePort(t)
			cmd := exec.Command(lockexBin, append([]string{"--http-addr", httpAddr}, lossArgs(zk.Hosts(), id, ticker(logPath, "a", 0, false))...)...)
			cmd.Stderr = pipe.w
			a := startCmd(t, cmd)
			waitRecord(t, logPath, "a")
			if !tc.fullBefore {
				t.Logf("pipe full after %d more bytes", pipe.fill(t))
			}
			b := startLockex(t, nil, lossArgs(zk.Hosts(), id, ticker(logPath, "b", 300*time.Millisecond, false))...)
			eventually(t, 10*time.Second, "b waits", func() bool { return len(children(t, conn, "/lockex/"+id)) == 2 })
			if tc.fullBefore {
				// Lines wait in a queue while it has room: make lockex log
				// more than it holds. Each forwarded SIGWINCH is a line
				// (signals sent faster than lockex takes them merge).
				dropped, sent := 0.0, 0
				for ; dropped < 1 && sent < 5000; sent++ {
					_ = a.cmd.Process.Signal(syscall.SIGWINCH)
					time.Sleep(time.Millisecond)
					if sent%100 == 99 {
						dropped, _ = metricValue(httpAddr, "lockex_log_lines_dropped_total")
					}
				}
				if dropped < 1 {
					t.Errorf("lockex_log_lines_dropped_total = %v after %d SIGWINCH, want at least 1", dropped, sent)
				}
				t.Logf("%v log lines dropped after %d SIGWINCH", dropped, sent)
			}

			kids := children(t, conn, "/lockex/"+id)
			holder := ""
			for _, k := range kids {
				if holder == "" || k[len(k)-10:] < holder[len(holder)-10:] {
					holder = k
				}
			}
			deleted := time.Now()
			if err := conn.Delete("/lockex/"+id+"/"+holder, -1); err != nil {
				t.Fatal(err)
			}
			if code := b.wait(t, 30*time.Second); code != 0 {
				t.Fatalf("waiter exit %d; log:\n%s", code, b.stderr)
			}
			// The waiter is done: whatever the holder wrote after its start
			// is in the log now.
			v := mustBeOneAtATime(t, logPath)
			t.Logf("%d runs, at most %d at once", v.runs, v.overlap)

			// After a loss lockex serves /metrics until its next scrape.
			deadline := time.Now().Add(15 * time.Second)
			for exited := false; !exited; {
				select {
				case <-a.done:
					exited = true
				case <-time.After(200 * time.Millisecond):
					if time.Now().After(deadline) {
						_ = a.cmd.Process.Kill()
						<-a.done
						t.Fatalf("holder still running %s after the delete; killed; its log:\n%s",
							time.Since(deleted).Round(time.Millisecond), pipe.drain(t))
					}
					metricValue(httpAddr, "lockex_lock_lost_total")
				}
			}
			if a.code != 76 {
				t.Errorf("holder exit %d, want 76; log:\n%s", a.code, pipe.drain(t))
			}
			t.Logf("holder exited %d %s after the delete", a.code, time.Since(deleted).Round(time.Millisecond))
		})
	}
}

// TestFrozenLockexKillsByDeadline: lockex alone (not its workload, which
// ignores SIGTERM) is frozen past the session timeout. When it resumes the
// server may have expired its session already: the workload gets SIGKILL
// at once, not after the 5s --kill-grace.
func TestFrozenLockexKillsByDeadline(t *testing.T) {
	zk := startZK(t)
	logPath := filepath.Join(t.TempDir(), "log")
	a := startLockex(t, nil, append([]string{"-z", zk.Hosts(), "-i", "frozen-alone", "--session-timeout", "10s", "--kill-grace", "5s", "--"},
		ticker(logPath, "a", 0, true)...)...)
	waitRecord(t, logPath, "a")

	if err := syscall.Kill(a.cmd.Process.Pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	// The freeze itself: longer than the session timeout, as a paused VM.
	time.Sleep(12 * time.Second)
	resumed := time.Now()
	if err := syscall.Kill(a.cmd.Process.Pid, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	code := a.wait(t, 30*time.Second)
	exited := time.Since(resumed)
	runs := readRuns(t, logPath)
	if len(runs) != 1 {
		t.Fatalf("%d runs, want 1", len(runs))
	}
	ranOn := time.Duration(runs[0].last - resumed.UnixNano())
	t.Logf("workload's last write %s after the resume; lockex exited %d %s after it", ranOn.Round(time.Millisecond), code, exited.Round(time.Millisecond))
	if code != 76 {
		t.Errorf("exit %d, want 76; log:\n%s", code, a.stderr)
	}
	if ranOn > 2500*time.Millisecond {
		t.Errorf("the workload wrote %s after the resume, want under 2.5s (--kill-grace is 5s); log:\n%s", ranOn, a.stderr)
	}
	if !strings.Contains(a.stderr.String(), "SIGKILL") {
		t.Errorf("no SIGKILL in the log:\n%s", a.stderr)
	}
}
