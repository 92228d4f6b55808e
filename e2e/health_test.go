package e2e

import (
	"bytes"
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

	dto "github.com/prometheus/client_model/go"
)

// healthServer is one run of testdata/health_server.py: a workload with
// an HTTP health endpoint that the test makes fail or hang.
type healthServer struct {
	t    *testing.T
	dir  string
	addr string
}

func newHealthServer(t *testing.T) *healthServer {
	return &healthServer{t: t, dir: t.TempDir(), addr: freePort(t)}
}

func (s *healthServer) argv() []string {
	_, port, _ := net.SplitHostPort(s.addr)
	return []string{python, "testdata/health_server.py", port, s.dir}
}

func (s *healthServer) url() string { return "http://" + s.addr + "/health" }

func (s *healthServer) touch(name string) { touch(s.t, filepath.Join(s.dir, name)) }

// checks counts the requests it answered or is answering.
func (s *healthServer) checks() int { return countLines(filepath.Join(s.dir, "log"), "check") }

// pid is the workload's pid, 0 until it has started.
func (s *healthServer) pid() int {
	pid, _ := s.started()
	return pid
}

// started is the workload's pid and the time it started, zero until then.
func (s *healthServer) started() (int, time.Time) {
	b, _ := os.ReadFile(filepath.Join(s.dir, "log"))
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "start" {
			pid, _ := strconv.Atoi(f[1])
			ns, _ := strconv.ParseInt(f[2], 10, 64)
			return pid, time.Unix(0, ns)
		}
	}
	return 0, time.Time{}
}

func touch(t *testing.T, path string) {
	t.Helper()
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
}

// countLines counts the lines of a file that are exactly line.
func countLines(path, line string) int {
	b, _ := os.ReadFile(path)
	return bytes.Count(append([]byte("\n"), b...), []byte("\n"+line+"\n"))
}

// leftovers counts the processes, zombies included, named lo-mark: what
// testdata/health_check.sh leaves behind.
func leftovers(mark string) int {
	entries, _ := os.ReadDir("/proc")
	n := 0
	for _, e := range entries {
		if b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "comm")); err == nil && string(b) == "lo-"+mark+"\n" {
			n++
		}
	}
	return n
}

// lineWith finds the first JSON log line with message msg.
func lineWith(t *testing.T, s *started, msg string) map[string]any {
	t.Helper()
	for _, line := range logLines(t, s) {
		if line["msg"] == msg {
			return line
		}
	}
	t.Fatalf("no %q line in:\n%s", msg, s.stderr)
	return nil
}

// TestHealthURLHandsOver: a holder whose workload passes its health check
// keeps the lock while a standby waits; once the check fails threshold
// times in a row, the holder stops its workload, releases, exits 77, and
// the standby takes over.
func TestHealthURLHandsOver(t *testing.T) {
	zk := startZK(t)
	const id = "health-url"
	start := func(s *healthServer) *observed {
		// A generous timeout: a loaded machine must not make a healthy
		// workload look unhealthy.
		args := []string{"-z", zk.Hosts(), "-i", id, "--health-url", s.url(), "--health-period", "100ms", "--health-timeout", "5s",
			"--health-failure-threshold", "3", "--health-start-period", "30s", "--"}
		return startObserved(t, nil, append(args, s.argv()...)...)
	}
	wa := newHealthServer(t)
	a := start(wa)
	eventually(t, 15*time.Second, "a's workload is checked", func() bool { return wa.checks() >= 3 })
	eventually(t, 15*time.Second, "a's workload is healthy", func() bool {
		return value(t, a.metrics(t), "lockex_workload_healthy") == 1
	})

	wb := newHealthServer(t)
	b := start(wb)
	if code := b.activeAfter(t, "contenders ahead"); code != 503 {
		t.Errorf("standby: /active %d", code)
	}
	// A healthy holder keeps holding, check after check.
	seen := wa.checks()
	eventually(t, 15*time.Second, "five more checks", func() bool { return wa.checks() >= seen+5 })
	select {
	case <-a.done:
		t.Fatalf("a healthy holder ended (%d):\n%s", a.code, a.stderr)
	default:
	}
	a.probes(t, 200, 200, 200)
	if wb.pid() != 0 {
		t.Fatal("the standby's workload started while the holder's was healthy")
	}
	pidA := wa.pid()

	wa.touch("sick")
	sick := time.Now()
	if code, unhealthy := a.scrapeUntilExit(t); code != 77 || unhealthy != 1 {
		t.Fatalf("a: exit %d, the last scrape's lockex_workload_unhealthy_total %v; want 77 and 1; its log:\n%s", code, unhealthy, a.stderr)
	}
	if _, state := statOf(pidA); state != 0 {
		t.Errorf("a's workload %d still there (state %c) after lockex exited", pidA, state)
	}
	checkLog(t, a.started, "/lockex/"+id, map[string][]string{
		"health check failed": {"check", "pid", "failures", "threshold", "err"},
		"workload unhealthy; stopping it and releasing the lock": {"pid", "err", "stopping"},
		"lock released": {"code"},
	})
	if err := lineWith(t, a.started, "workload unhealthy; stopping it and releasing the lock")["err"]; err != "workload failed its health check 3 times in a row: GET "+wa.url()+": 503 Service Unavailable" {
		t.Errorf("unhealthy: err %q", err)
	}
	eventually(t, 15*time.Second, "b's workload starts", func() bool { return wb.pid() != 0 })
	// Not asserted (no timing asserts): 3 checks 100ms apart, the stop,
	// the release, the standby's watch, its workload's start.
	_, bStarted := wb.started()
	t.Logf("from the workload turning sick to the standby's workload running: %s", bStarted.Sub(sick).Round(time.Millisecond))
	conn := zkClient(t, zk.Hosts())
	if kids := children(t, conn, "/lockex/"+id); len(kids) != 1 {
		t.Errorf("nodes %q, want b's alone", kids)
	}
	eventually(t, 15*time.Second, "b's workload is healthy", func() bool {
		return value(t, b.metrics(t), "lockex_workload_healthy") == 1
	})
	_ = b.cmd.Process.Signal(syscall.SIGTERM)
	b.wait(t, 15*time.Second)
}

// value is one lockex_ series' value in a scrape (the first, for a
// family with labels), failing the test if it is missing.
func value(t *testing.T, families map[string]*dto.MetricFamily, name string) float64 {
	t.Helper()
	f := families[name]
	if f == nil || len(f.Metric) == 0 {
		t.Fatalf("%s missing", name)
	}
	m := f.Metric[0]
	switch {
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Counter != nil:
		return m.Counter.GetValue()
	}
	t.Fatalf("%s is neither a gauge nor a counter", name)
	return 0
}

// TestHealthUnhealthyObserved: a check that hangs fails at its timeout;
// the unhealthy holder, kept for --min-hold after its workload was
// stopped, says so in /active, the metrics and the log, and a signal then
// ends it with 77.
func TestHealthUnhealthyObserved(t *testing.T) {
	zk := startZK(t)
	const id = "health-observed"
	w := newHealthServer(t)
	args := []string{"-z", zk.Hosts(), "-i", id, "--health-url", w.url(), "--health-period", "100ms", "--health-timeout", "2s",
		"--health-failure-threshold", "2", "--health-start-period", "30s", "--min-hold", "1h", "--"}
	a := startObserved(t, nil, append(args, w.argv()...)...)
	eventually(t, 15*time.Second, "the workload is healthy", func() bool {
		return value(t, a.metrics(t), "lockex_workload_healthy") == 1
	})
	w.touch("hang")
	says := "workload failed its health check 2 times in a row: no answer within 2s; stopping it"
	if code := a.activeAfter(t, says); code != 503 {
		t.Errorf("unhealthy: /active %d, want 503", code)
	}
	eventually(t, 15*time.Second, "the workload is stopped", func() bool {
		_, state := statOf(w.pid())
		return state == 0
	})
	a.probes(t, 200, 200, 503)
	families := a.metrics(t)
	check(t, families, "/lockex/"+id, map[string]want{
		"lockex_lock_held": gauge(1), "lockex_workload_running": gauge(0), "lockex_workload_healthy": gauge(0),
		"lockex_workload_unhealthy_total": counter(1),
	})
	if n := value(t, families, "lockex_health_check_failures_total"); n < 2 {
		t.Errorf("lockex_health_check_failures_total %v, want at least 2", n)
	}
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	if code, unhealthy := a.scrapeUntilExit(t); code != 77 || unhealthy != 1 {
		t.Errorf("exit %d, the last scrape's lockex_workload_unhealthy_total %v; want 77 and 1", code, unhealthy)
	}
}

// scrapeUntilExit scrapes /metrics until lockex exits, which it does after
// a stop for the workload's health only once scraped (design.md §8, last
// scrape), and returns its exit code and the last
// lockex_workload_unhealthy_total seen.
func (o *observed) scrapeUntilExit(t *testing.T) (code int, unhealthy float64) {
	t.Helper()
	addr := strings.TrimPrefix(o.base, "http://")
	unhealthy = -1
	eventually(t, 30*time.Second, "lockex exits, scraped", func() bool {
		if v, ok := metricValue(addr, "lockex_workload_unhealthy_total"); ok {
			unhealthy = v
		}
		select {
		case <-o.done:
			return true
		default:
			return false
		}
	})
	return o.code, unhealthy
}

// TestHealthCmd: --health-cmd as PID 1 and as a subreaper. The checks'
// exit statuses reach lockex's checker (a healthy holder keeps holding),
// what a check leaves in its group is killed and reaped, and a check that
// fails (exit 1) or hangs past its timeout stops the workload: exit 77,
// with nothing of the checks left.
func TestHealthCmd(t *testing.T) {
	zk := startZK(t)
	check, err := filepath.Abs("testdata/health_check.sh")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range modes {
		for _, how := range []string{"sick", "hang"} {
			t.Run(m.name+"/"+how, func(t *testing.T) {
				dir := t.TempDir()
				mark := strconv.Itoa(900000 + rand.IntN(99999))
				checks := filepath.Join(dir, "checks")
				sleep, err := exec.LookPath("sleep")
				if err != nil {
					t.Fatal(err)
				}
				if err := os.Symlink(sleep, filepath.Join(dir, "lo-"+mark)); err != nil {
					t.Fatal(err)
				}
				s := m.start(t, nil, "-z", zk.Hosts(), "-i", "health-cmd-"+m.name+"-"+how, "--log-format", "json",
					"--health-cmd", check+" "+dir+" "+mark, "--health-period", "100ms", "--health-timeout", "2s",
					"--health-failure-threshold", "2", "--", "sh", "-c", "echo start >> "+dir+"/log; exec sleep 1000")
				eventually(t, 15*time.Second, "five checks", func() bool { return countLines(checks, "check") >= 5 })
				select {
				case <-s.done:
					t.Fatalf("a healthy holder ended (%d):\n%s", s.code, s.stderr)
				default:
				}
				eventually(t, 10*time.Second, "nothing left of the checks", func() bool { return leftovers(mark) == 0 })
				if n := countLines(filepath.Join(dir, "log"), "start"); n != 1 {
					t.Errorf("the workload started %d times", n)
				}

				touch(t, filepath.Join(dir, how))
				if code := s.wait(t, 30*time.Second); code != 77 {
					t.Fatalf("exit %d, want 77; log:\n%s", code, s.stderr)
				}
				wantErr := map[string]string{
					"sick": "workload failed its health check 2 times in a row: exec " + check + " " + dir + " " + mark + ": exit 1: sick: " + dir + "/sick exists",
					"hang": "workload failed its health check 2 times in a row: no answer within 2s",
				}[how]
				if err := lineWith(t, s, "workload unhealthy; stopping it and releasing the lock")["err"]; err != wantErr {
					t.Errorf("err %q, want %q", err, wantErr)
				}
				eventually(t, 10*time.Second, "nothing left of the checks after lockex", func() bool { return leftovers(mark) == 0 })
			})
		}
	}
}
