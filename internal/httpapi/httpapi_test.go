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
)

// TestProbes: each probe's code in each state of SPEC section 5's table.
func TestProbes(t *testing.T) {
	var mu sync.Mutex
	var snap status.Snapshot
	srv, err := Start("127.0.0.1:0", func() status.Snapshot { mu.Lock(); defer mu.Unlock(); return snap },
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
		{"connecting", status.Snapshot{Phase: status.Connecting}, 200, 503, 503},
		{"waiting", status.Snapshot{Phase: status.Waiting, Connected: true}, 200, 200, 503},
		{"holding, workload not started", status.Snapshot{Phase: status.Holding, Connected: true}, 200, 200, 503},
		{"running", status.Snapshot{Phase: status.Running, Connected: true}, 200, 200, 200},
		{"running, suspended", status.Snapshot{Phase: status.Running, Suspended: true}, 200, 503, 200},
		{"lost: suspend deadline", status.Snapshot{Phase: status.Lost, Suspended: true, LostReason: "suspend_deadline"}, 503, 503, 503},
		{"lost: node deleted", status.Snapshot{Phase: status.Lost, Connected: true, LostReason: "node_deleted"}, 200, 200, 503},
		{"session expired", status.Snapshot{Phase: status.Waiting, SessionLost: true}, 503, 503, 503},
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
	if _, err := Start(srv.Addr(), nil, nil, slog.New(slog.NewTextHandler(io.Discard, nil))); err == nil || !strings.Contains(err.Error(), "--http-addr") {
		t.Errorf("a taken address: %v, want an error naming --http-addr", err)
	}
}
