package e2e

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// readyServer is one run of testdata/ready_server.py: a workload with an HTTP
// server that the test tells when to listen and when to fail its /ready.
type readyServer struct {
	t    *testing.T
	dir  string
	addr string // 127.0.0.1:port it will listen on
}

func newReadyServer(t *testing.T) *readyServer {
	return &readyServer{t: t, dir: t.TempDir(), addr: freePort(t)}
}

func (s *readyServer) argv() []string {
	_, port, _ := net.SplitHostPort(s.addr)
	return []string{python, "testdata/ready_server.py", port, s.dir}
}

func (s *readyServer) touch(name string) {
	if err := os.WriteFile(filepath.Join(s.dir, name), nil, 0o644); err != nil {
		s.t.Fatal(err)
	}
}

func (s *readyServer) remove(name string) {
	if err := os.Remove(filepath.Join(s.dir, name)); err != nil {
		s.t.Fatal(err)
	}
}

// noted reports whether the workload wrote what to its log.
func (s *readyServer) noted(what string) bool {
	b, _ := os.ReadFile(filepath.Join(s.dir, "log"))
	return strings.Contains(string(b), what+"\n")
}

// activeAfter waits until /active says what (in its body) and returns its
// code then.
func (o *observed) activeAfter(t *testing.T, what string) int {
	t.Helper()
	var code int
	eventually(t, 15*time.Second, "/active says "+what, func() bool {
		var body string
		code, body = o.get(t, "/active")
		return strings.Contains(body, what)
	})
	return code
}

// TestActiveFollowsWorkload: with --active-http or --active-tcp, /active
// turns 200 once the workload answers the check, not when its process
// starts; it follows the workload's readiness as it changes; and a standby
// that takes over is active only once its own workload serves.
func TestActiveFollowsWorkload(t *testing.T) {
	zk := startZK(t)
	for _, kind := range []string{"http", "tcp"} {
		t.Run(kind, func(t *testing.T) {
			id := "active-" + kind
			checkFlags := func(s *readyServer) []string {
				if kind == "http" {
					return []string{"--active-http", "http://" + s.addr + "/ready"}
				}
				return []string{"--active-tcp", s.addr}
			}
			start := func(s *readyServer) *observed {
				args := append([]string{"-z", zk.Hosts(), "-i", id, "--active-period", "100ms", "--active-failure-threshold", "2"}, checkFlags(s)...)
				return startObserved(t, nil, append(append(args, "--"), s.argv()...)...)
			}

			wa := newReadyServer(t)
			a := start(wa)
			eventually(t, 15*time.Second, "a's workload starts", func() bool { return wa.noted("start") })
			// Running, checked, and not listening yet: not active.
			if code := a.activeAfter(t, "not ready ("); code != 503 {
				t.Errorf("workload running, not serving: /active %d, want 503", code)
			}
			a.probes(t, 200, 200, 503)
			check(t, a.metrics(t), "/lockex/"+id, map[string]want{
				"lockex_workload_running": gauge(1), "lockex_workload_ready": gauge(0), "lockex_lock_held": gauge(1),
			})

			wa.touch("serve")
			eventually(t, 15*time.Second, "a is active", func() bool { code, _ := a.get(t, "/active"); return code == 200 })
			if _, body := a.get(t, "/active"); !strings.Contains(body, ", ready ("+strings.ToUpper(kind)) && !strings.Contains(body, ", ready (GET") {
				t.Errorf("/active says %q, want it ready by the check", body)
			}
			check(t, a.metrics(t), "/lockex/"+id, map[string]want{"lockex_workload_ready": gauge(1)})

			if kind == "http" {
				// The workload's own readiness fails: off /active after two
				// failed checks, back on after one that passes.
				wa.touch("sick")
				if code := a.activeAfter(t, "503 Service Unavailable"); code != 503 {
					t.Errorf("workload answers 503: /active %d, want 503", code)
				}
				wa.remove("sick")
				eventually(t, 15*time.Second, "a is active again", func() bool { code, _ := a.get(t, "/active"); return code == 200 })
				checkLog(t, a.started, "/lockex/"+id, map[string][]string{
					"workload ready; active":         {"check", "pid"},
					"workload not ready; not active": {"check", "pid", "err"},
				})
			}

			// A standby waits; when the holder stops, its own workload
			// starts, and it is active only once that one serves.
			wb := newReadyServer(t)
			b := start(wb)
			if code := b.activeAfter(t, "contenders ahead"); code != 503 {
				t.Errorf("standby: /active %d", code)
			}
			_ = a.cmd.Process.Signal(syscall.SIGTERM)
			if code := a.wait(t, 15*time.Second); code != 128+int(syscall.SIGTERM) {
				t.Errorf("a: exit %d, want the workload's %d", code, 128+int(syscall.SIGTERM))
			}
			eventually(t, 15*time.Second, "b's workload starts", func() bool { return wb.noted("start") })
			if code := b.activeAfter(t, "not ready ("); code != 503 {
				t.Errorf("b took over, its workload not serving: /active %d, want 503", code)
			}
			wb.touch("serve")
			eventually(t, 15*time.Second, "b is active", func() bool { code, _ := b.get(t, "/active"); return code == 200 })
			if !wb.noted("serving") {
				t.Error("b active before its workload served")
			}
			_ = b.cmd.Process.Signal(syscall.SIGTERM)
			b.wait(t, 15*time.Second)
		})
	}
}
