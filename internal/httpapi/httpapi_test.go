package httpapi

import (
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/lockex/lockex/internal/status"
	"github.com/lockex/lockex/internal/supervisor"
	"github.com/lockex/lockex/internal/zklock"
)

// TestProbes: each probe's code in each state of docs/design.md §8's table.
func TestProbes(t *testing.T) {
	var mu sync.Mutex
	var snap status.Snapshot
	srv, err := Start("127.0.0.1:0", func() status.Snapshot { mu.Lock(); defer mu.Unlock(); return snap }, nil,
		prometheus.NewRegistry(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	for _, tc := range []struct {
		name                    string
		s                       status.Snapshot
		healthz, readyz, active int
	}{
		{"connecting", status.Snapshot{State: supervisor.Connecting}, 200, 503, 503},
		{"waiting", status.Snapshot{State: supervisor.Waiting, Connected: true}, 200, 200, 503},
		{"holding, workload not started", status.Snapshot{State: supervisor.Holding, Connected: true}, 200, 200, 503},
		{"running", status.Snapshot{State: supervisor.Running, Connected: true}, 200, 200, 200},
		{"running, suspended", status.Snapshot{State: supervisor.Running, Suspended: true}, 200, 503, 200},
		{"lost: suspend deadline", status.Snapshot{State: supervisor.Lost, Suspended: true, LockLost: true, Loss: zklock.SuspendDeadline}, 503, 503, 503},
		{"lost: node deleted", status.Snapshot{State: supervisor.Lost, Connected: true, LockLost: true, Loss: zklock.NodeDeleted}, 200, 200, 503},
		{"released after a loss by expiry", status.Snapshot{State: supervisor.Released, LockLost: true, Loss: zklock.SessionExpired}, 503, 503, 503},
		{"session expired", status.Snapshot{State: supervisor.Waiting, SessionLost: true}, 503, 503, 503},
		{"gave up", status.Snapshot{State: supervisor.GaveUp, Connected: true}, 200, 200, 503},
		{"stopping at --max-runtime", status.Snapshot{State: supervisor.Stopping, Connected: true, StopReason: "max runtime passed"}, 200, 200, 503},
		{"backoff, session kept", status.Snapshot{State: supervisor.Backoff, Connected: true, Round: 2}, 200, 200, 503},
		{"backoff, session closed", status.Snapshot{State: supervisor.Backoff, Round: 2}, 200, 503, 503},
		{"running, check not passed", status.Snapshot{State: supervisor.Running, Connected: true, Check: "TCP 127.0.0.1:1"}, 200, 200, 503},
		{"running, check passed", status.Snapshot{State: supervisor.Running, Connected: true, Check: "TCP 127.0.0.1:1", WorkloadReady: true}, 200, 200, 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mu.Lock()
			snap = tc.s
			snap.Lock = "/lockex/x"
			mu.Unlock()
			for path, want := range map[string]int{"/healthz": tc.healthz, "/readyz": tc.readyz, "/active": tc.active} {
				resp, err := http.Get("http://" + srv.Addr() + path)
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != want || !strings.Contains(string(body), "/lockex/x") {
					t.Errorf("%s: %d %q, want %d and the state in words", path, resp.StatusCode, body, want)
				}
			}
		})
	}
	if _, err := Start(srv.Addr(), nil, nil, nil, slog.New(slog.NewTextHandler(io.Discard, nil))); err == nil || !strings.Contains(err.Error(), "--http-addr") {
		t.Errorf("a taken address: %v, want an error naming --http-addr", err)
	}
}
