package httpapi

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/lockex/lockex/internal/status"
	"github.com/lockex/lockex/internal/supervisor"
)

// TestLockViewShares: callers at once share one read, and a read younger
// than lockReadFresh is served again, so /status cannot be made to hammer
// the session the lock depends on.
func TestLockViewShares(t *testing.T) {
	var reads atomic.Int32
	release := make(chan struct{})
	v := &lockView{read: func(ctx context.Context) (*status.Lock, error) {
		reads.Add(1)
		<-release
		return &status.Lock{Lock: "/lockex/x"}, nil
	}}
	var wg sync.WaitGroup
	results := make(chan string, 8)
	for range 8 {
		wg.Go(func() {
			lock, err := v.get(context.Background())
			if err != nil {
				results <- err.Error()
				return
			}
			results <- lock.Lock
		})
	}
	// Every caller is waiting on the one read before it ends.
	for deadline := time.Now().Add(10 * time.Second); reads.Load() == 0 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	close(release)
	wg.Wait()
	close(results)
	for r := range results {
		if r != "/lockex/x" {
			t.Errorf("a caller got %q", r)
		}
	}
	if lock, err := v.get(context.Background()); err != nil || lock.Lock != "/lockex/x" {
		t.Errorf("fresh read again: %v, %v", lock, err)
	}
	if n := reads.Load(); n != 1 {
		t.Errorf("%d reads for 9 callers within a second, want 1", n)
	}
}

// TestLockViewHung: a read that does not end answers its callers with an
// error once lockReadMax has passed, and no second read starts beside it.
func TestLockViewHung(t *testing.T) {
	var reads atomic.Int32
	hang := make(chan struct{})
	defer close(hang)
	v := &lockView{read: func(ctx context.Context) (*status.Lock, error) {
		reads.Add(1)
		<-hang // as a go-zookeeper request queued while disconnected
		return nil, ctx.Err()
	}}
	for i := range 2 {
		start := time.Now()
		lock, err := v.get(context.Background())
		if err == nil || !strings.Contains(err.Error(), "no answer from zookeeper within 2s") || lock != nil {
			t.Errorf("get %d: %v, %v; want no answer within 2s", i+1, lock, err)
		}
		t.Logf("get %d answered after %s", i+1, time.Since(start).Round(time.Millisecond))
	}
	if n := reads.Load(); n != 1 {
		t.Errorf("%d reads, want 1: a hung read keeps its place", n)
	}
}

// TestStatusPage: /status is 200 and JSON in every state, with the
// instance's own state, and the lock only when ZooKeeper could be read:
// not connected, it does not even try.
func TestStatusPage(t *testing.T) {
	var mu sync.Mutex
	snap := status.Snapshot{Lock: "/lockex/x", MaxHolders: 1, State: supervisor.Connecting}
	var reads atomic.Int32
	read := func(ctx context.Context) (*status.Lock, error) {
		reads.Add(1)
		return &status.Lock{Lock: "/lockex/x", Kind: "lock", Size: 1, Holders: []status.Node{}, Waiting: []status.Node{}}, nil
	}
	srv, err := Start("127.0.0.1:0", func() status.Snapshot { mu.Lock(); defer mu.Unlock(); return snap }, read,
		prometheus.NewRegistry(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	get := func() (map[string]json.RawMessage, status.Instance) {
		t.Helper()
		resp, err := http.Get("http://" + srv.Addr() + "/status")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("Cache-Control") != "no-store" || resp.Header.Get("Content-Type") != "application/json" {
			t.Errorf("status %d, headers %v", resp.StatusCode, resp.Header)
		}
		var body map[string]json.RawMessage
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			t.Fatal(err)
		}
		var in status.Instance
		if err := json.Unmarshal(body["instance"], &in); err != nil {
			t.Fatal(err)
		}
		return body, in
	}

	body, in := get()
	if in.State != "connecting" || in.Lock != "/lockex/x" || body["lock"] != nil || string(body["zookeeper_error"]) != `"not connected to zookeeper"` {
		t.Errorf("connecting: %s", body)
	}
	if n := reads.Load(); n != 0 {
		t.Errorf("read the lock %d times without a connection", n)
	}

	mu.Lock()
	snap = status.Snapshot{Lock: "/lockex/x", MaxHolders: 1, State: supervisor.Running, Connected: true, Node: "/lockex/x/n", Token: 7, Pid: 42,
		HealthCheck: "GET http://127.0.0.1:8080/healthz", HealthThreshold: 3, HealthFailures: 1, HealthErr: "503 Service Unavailable", Round: 1}
	mu.Unlock()
	body, in = get()
	if in.State != "running" || !in.Held || in.Node != "/lockex/x/n" || in.Token != 7 || in.Pid != 42 || in.Readiness != nil ||
		in.Health == nil || in.Health.Failures != 1 || in.Health.Threshold != 3 || in.Health.Error != "503 Service Unavailable" || in.Health.OK {
		t.Errorf("running: %s", body)
	}
	if body["zookeeper_error"] != nil || !strings.Contains(string(body["lock"]), `"holders": []`) {
		t.Errorf("connected: want the lock and no error: %s", body)
	}
}
