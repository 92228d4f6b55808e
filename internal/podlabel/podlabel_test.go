package podlabel

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// apiServer stands in for the one call lockex makes to Kubernetes: a merge
// patch of one pod's metadata, at most one label and one annotation.
// Anything else fails the test. The pod's labels and annotations are kept
// as the API server would keep them, and the server can be told to refuse.
type apiServer struct {
	t           *testing.T
	srv         *httptest.Server
	mu          sync.Mutex
	labels      map[string]string
	annotations map[string]string
	bodies      []string // every patch, as sent
	refuse      int      // answer the next n patches with 503
	// lose applies the next n patches and answers 504, as a proxy does
	// when the API server behind it committed and then was too slow.
	lose  int
	calls int
}

func startAPIServer(t *testing.T) *apiServer {
	a := &apiServer{t: t, labels: map[string]string{"app": "x", "lockex.io/active": "true"},
		annotations: map[string]string{DeletionCostAnnotation: HolderCost}}
	a.srv = httptest.NewTLSServer(http.HandlerFunc(a.serve))
	t.Cleanup(a.srv.Close)
	return a
}

func (a *apiServer) serve(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.calls++
	if r.Method != http.MethodPatch || r.URL.Path != "/api/v1/namespaces/team-a/pods/web-0" ||
		r.Header.Get("Content-Type") != "application/merge-patch+json" || r.Header.Get("Authorization") != "Bearer tok-1" {
		a.t.Errorf("unexpected call %s %s %v", r.Method, r.URL.Path, r.Header)
		http.Error(w, "unexpected", http.StatusBadRequest)
		return
	}
	if a.refuse > 0 {
		a.refuse--
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte(`{"kind":"Status","message":"etcd is down"}`))
		return
	}
	var patch struct {
		Metadata map[string]map[string]*string `json:"metadata"`
	}
	body, _ := io.ReadAll(r.Body)
	a.bodies = append(a.bodies, string(body))
	if err := json.Unmarshal(body, &patch); err != nil || len(patch.Metadata) == 0 {
		a.t.Errorf("patch %s: want labels or annotations", body)
	}
	for field, kv := range patch.Metadata {
		m := map[string]map[string]string{"labels": a.labels, "annotations": a.annotations}[field]
		if m == nil || len(kv) == 0 || (field == "labels" && len(kv) != 1) || (field == "annotations" && (len(kv) > 2 || !hasKey(kv, HoldAnnotation))) {
			a.t.Errorf("patch %s: want at most one label, and the hold's annotation with at most the cost", body)
			continue
		}
		for k, v := range kv {
			if v == nil {
				delete(m, k)
			} else {
				m[k] = *v
			}
		}
	}
	if a.lose > 0 {
		a.lose--
		w.WriteHeader(http.StatusGatewayTimeout)
		return
	}
	_, _ = w.Write([]byte(`{"kind":"Pod"}`))
}

func hasKey(kv map[string]*string, k string) bool { _, ok := kv[k]; return ok }

func (a *apiServer) cost() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.annotations[DeletionCostAnnotation]
}

func (a *apiServer) label() (string, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	v, ok := a.labels["lockex.io/active"]
	return v, ok
}

// serviceAccount writes the directory Kubernetes mounts into a pod, for
// the server a.
func (a *apiServer) serviceAccount(t *testing.T) (dir string, getenv func(string) string) {
	dir = t.TempDir()
	cert := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: a.srv.Certificate().Raw})
	for name, data := range map[string]string{"ca.crt": string(cert), "token": "tok-1\n", "namespace": "team-a"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	host, port, _ := net.SplitHostPort(strings.TrimPrefix(a.srv.URL, "https://"))
	env := map[string]string{"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": port}
	return dir, func(k string) string { return env[k] }
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within 10s: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestInCluster(t *testing.T) {
	a := startAPIServer(t)
	dir, getenv := a.serviceAccount(t)
	cfg, err := InCluster(getenv, dir)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Namespace != "team-a" || cfg.Server != a.srv.URL || cfg.TokenFile != filepath.Join(dir, "token") {
		t.Errorf("%+v", cfg)
	}
	if _, err := InCluster(func(string) string { return "" }, dir); err == nil || !strings.Contains(err.Error(), "KUBERNETES_SERVICE_HOST") {
		t.Errorf("outside a pod: %v", err)
	}
	if _, err := InCluster(getenv, t.TempDir()); err == nil || !strings.Contains(err.Error(), "namespace") {
		t.Errorf("no service account: %v", err)
	}
}

// TestLabeler: a stale label is removed at start; the label follows Set,
// through refusals (retried) and wishes that change faster than the patches.
func TestLabeler(t *testing.T) {
	a := startAPIServer(t)
	cfg := a.config(t)
	var logs strings.Builder
	var logMu sync.Mutex
	log := slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
		logMu.Lock()
		defer logMu.Unlock()
		return logs.Write(p)
	}), nil))
	l := New(cfg, log, nil)
	ctx, cancel := context.WithCancel(context.Background())
	go l.Run(ctx)

	eventually(t, "the stale label is removed at start", func() bool { _, ok := a.label(); return !ok })
	l.Set(Wish{Active: true})
	eventually(t, "the label is set", func() bool { v, _ := a.label(); return v == "true" })

	a.mu.Lock()
	a.refuse = 2
	a.mu.Unlock()
	l.Set(Wish{})
	eventually(t, "the label is removed after two refusals", func() bool { _, ok := a.label(); return !ok })
	logMu.Lock()
	if n := strings.Count(logs.String(), "cannot patch the pod"); n != 1 || !strings.Contains(logs.String(), "etcd is down") {
		t.Errorf("want one error line naming the API server's message for the streak of refusals, got:\n%s", logs.String())
	}
	logMu.Unlock()

	for range 50 {
		l.Set(Wish{Active: true})
		l.Set(Wish{})
	}
	l.Set(Wish{Active: true})
	eventually(t, "the last wish wins", func() bool { v, _ := a.label(); return v == "true" })

	// As lockex exits: the label goes.
	cancel()
	l.Clear(2 * time.Second)
	if _, ok := a.label(); ok {
		t.Error("label still there after Clear")
	}
}

func (a *apiServer) config(t *testing.T) Config {
	t.Helper()
	dir, getenv := a.serviceAccount(t)
	cfg, err := InCluster(getenv, dir)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Key, cfg.Value, cfg.Pod = "lockex.io/active", "true", "web-0"
	return cfg
}

func (a *apiServer) patches() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.calls
}

// startLabeler runs a Labeler against a until the test ends, and has
// removed the stale label.
func startLabeler(t *testing.T, a *apiServer, recheckAfter time.Duration) (*Labeler, context.CancelFunc) {
	t.Helper()
	l := New(a.config(t), slog.New(slog.DiscardHandler), nil)
	l.recheckAfter = recheckAfter
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); <-l.done })
	go l.Run(ctx)
	eventually(t, "the stale label is removed at start", func() bool { _, ok := a.label(); return !ok })
	return l, cancel
}

// TestLabelerLostAnswer: a patch applied whose answer is lost leaves the
// label unknown, so the next wish is sent even if it equals what lockex
// believed before, both ways, and Clear removes a label whose set went
// unanswered.
func TestLabelerLostAnswer(t *testing.T) {
	a := startAPIServer(t)
	l, cancel := startLabeler(t, a, time.Hour)

	a.mu.Lock()
	a.lose = 1
	a.mu.Unlock()
	l.Set(Wish{Active: true})
	eventually(t, "the set is applied", func() bool { v, _ := a.label(); return v == "true" })
	l.Set(Wish{})
	eventually(t, "the label is removed after a lost answer to its set", func() bool { _, ok := a.label(); return !ok })

	l.Set(Wish{Active: true})
	eventually(t, "the label is set", func() bool { v, _ := a.label(); return v == "true" })
	a.mu.Lock()
	a.lose = 1
	a.mu.Unlock()
	l.Set(Wish{})
	eventually(t, "the removal is applied", func() bool { _, ok := a.label(); return !ok })
	l.Set(Wish{Active: true})
	eventually(t, "the label is set again after a lost answer to its removal", func() bool { v, _ := a.label(); return v == "true" })

	l.Set(Wish{})
	eventually(t, "the label is removed", func() bool { _, ok := a.label(); return !ok })
	a.mu.Lock()
	a.lose = 1
	a.mu.Unlock()
	l.Set(Wish{Active: true})
	eventually(t, "the set is applied", func() bool { v, _ := a.label(); return v == "true" })
	cancel()
	l.Clear(2 * time.Second)
	if _, ok := a.label(); ok {
		t.Error("Clear left a label whose set went unanswered")
	}
}

// TestLabelerBackoff: against an API server that refuses everything,
// neither the same wish again and again (a readiness check's every
// result) nor a flapping wish makes the patches come faster than the
// backoff: tries at 0, 0.5, 1.5s of a 2s window.
func TestLabelerBackoff(t *testing.T) {
	for _, flap := range []bool{false, true} {
		t.Run(map[bool]string{false: "same wish", true: "flapping"}[flap], func(t *testing.T) {
			a := startAPIServer(t)
			l, _ := startLabeler(t, a, time.Hour)
			a.mu.Lock()
			a.refuse = 1 << 30
			a.mu.Unlock()
			before := a.patches()
			for i := range 200 {
				l.Set(Wish{Active: !flap || i%2 == 0})
				time.Sleep(10 * time.Millisecond)
			}
			if n := a.patches() - before; n > 4 {
				t.Errorf("%d patches in about 2s against an API server that refuses them all, want at most 4 (0.5s doubling)", n)
			}
		})
	}
}

// TestLabelerRecheck: after a streak of failures ends, the wish is sent
// once more, which undoes a patch of the streak applied late.
func TestLabelerRecheck(t *testing.T) {
	a := startAPIServer(t)
	l, _ := startLabeler(t, a, 300*time.Millisecond)
	a.mu.Lock()
	a.refuse = 1
	a.mu.Unlock()
	l.Set(Wish{Active: true})
	eventually(t, "the label is set after a refusal", func() bool { v, _ := a.label(); return v == "true" })
	// A removal given up on long ago lands now.
	a.mu.Lock()
	delete(a.labels, "lockex.io/active")
	a.mu.Unlock()
	eventually(t, "the label is set again by the recheck", func() bool { v, _ := a.label(); return v == "true" })
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// TestDeletionCost: with --deletion-cost the pod's cost follows Held and
// the label follows Active, both in one patch; a stale holder's cost is
// made a standby's at start and at exit; without a label the patch names
// no label, and a change of Active alone costs no call; every failed patch
// is counted.
func TestDeletionCost(t *testing.T) {
	t.Run("with the label", func(t *testing.T) {
		a := startAPIServer(t)
		cfg := a.config(t)
		cfg.DeletionCost = true
		var failures atomic.Int64
		l := New(cfg, slog.New(slog.DiscardHandler), func() { failures.Add(1) })
		ctx, cancel := context.WithCancel(context.Background())
		go l.Run(ctx)
		eventually(t, "a standby at start: no label, the low cost", func() bool {
			_, labelled := a.label()
			return !labelled && a.cost() == StandbyCost
		})
		if n := a.patches(); n != 1 {
			t.Errorf("%d patches at start, want 1 carrying both", n)
		}
		l.Set(Wish{Held: true}) // holding, workload not ready yet
		eventually(t, "the holder's cost", func() bool { return a.cost() == HolderCost })
		if _, labelled := a.label(); labelled {
			t.Error("labelled active while only holding")
		}
		l.Set(Wish{Held: true, Active: true})
		eventually(t, "the label", func() bool { v, _ := a.label(); return v == "true" })

		a.mu.Lock()
		a.refuse = 2
		a.mu.Unlock()
		l.Set(Wish{})
		eventually(t, "a standby again after two refusals", func() bool {
			_, labelled := a.label()
			return !labelled && a.cost() == StandbyCost
		})
		if n := failures.Load(); n != 2 {
			t.Errorf("%d failures counted, want 2", n)
		}
		l.Set(Wish{Held: true})
		eventually(t, "the holder's cost", func() bool { return a.cost() == HolderCost })
		cancel()
		l.Clear(2 * time.Second)
		if got := a.cost(); got != StandbyCost {
			t.Errorf("after Clear, cost %q, want %s", got, StandbyCost)
		}
	})
	t.Run("alone", func(t *testing.T) {
		a := startAPIServer(t)
		cfg := a.config(t)
		cfg.Key, cfg.Value, cfg.DeletionCost = "", "", true
		l := New(cfg, slog.New(slog.DiscardHandler), nil)
		ctx, cancel := context.WithCancel(context.Background())
		t.Cleanup(func() { cancel(); <-l.done })
		go l.Run(ctx)
		eventually(t, "the low cost at start", func() bool { return a.cost() == StandbyCost })
		l.Set(Wish{Held: true, Active: true})
		eventually(t, "the holder's cost", func() bool { return a.cost() == HolderCost })
		before := a.patches()
		l.Set(Wish{Held: true}) // Active changed, which nothing shows
		l.Set(Wish{Held: true, Active: true})
		l.Set(Wish{Held: false})
		eventually(t, "the low cost", func() bool { return a.cost() == StandbyCost })
		if n := a.patches() - before; n != 1 {
			t.Errorf("%d patches for one change of Held, want 1", n)
		}
		a.mu.Lock()
		defer a.mu.Unlock()
		if v, ok := a.labels["lockex.io/active"]; !ok || v != "true" {
			t.Errorf("a label lockex was not asked to keep was touched: %q %v", v, ok)
		}
		for _, body := range a.bodies {
			if strings.Contains(body, "labels") {
				t.Errorf("patch %s names labels without --active-label", body)
			}
		}
	})
}

// TestLabelerDrain: Drain takes the label off while the wish is still
// active, its channel closes only once a patch without the label has been
// answered (not while the API server refuses), and the label stays off
// while the cost still follows Held; without a label Drain is done at once.
func TestLabelerDrain(t *testing.T) {
	a := startAPIServer(t)
	cfg := a.config(t)
	cfg.DeletionCost = true
	l := New(cfg, slog.New(slog.DiscardHandler), nil)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); <-l.done })
	go l.Run(ctx)
	l.Set(Wish{Active: true, Held: true})
	eventually(t, "the label", func() bool { v, _ := a.label(); return v == "true" })

	a.mu.Lock()
	a.refuse = 2
	a.mu.Unlock()
	drained := l.Drain()
	select {
	case <-drained:
		t.Fatal("drained before the API server answered")
	default:
	}
	eventually(t, "drained after two refusals", func() bool {
		select {
		case <-drained:
			return true
		default:
			return false
		}
	})
	if _, labelled := a.label(); labelled {
		t.Error("drained, and the label is still there")
	}
	before := a.patches()
	l.Set(Wish{Active: true, Held: true}) // the holder still runs
	l.Set(Wish{Active: true, Held: false})
	eventually(t, "the cost still follows Held", func() bool { return a.cost() == StandbyCost })
	if _, labelled := a.label(); labelled {
		t.Error("the label came back after the drain")
	}
	if n := a.patches() - before; n != 1 {
		t.Errorf("%d patches after the drain, want 1 (the cost)", n)
	}

	cfg.Key = ""
	select {
	case <-New(cfg, slog.New(slog.DiscardHandler), nil).Drain():
	default:
		t.Error("without a label, Drain is not done at once")
	}
}
