package e2e

import (
	"encoding/json"
	"encoding/pem"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lockex/lockex/internal/zktest"
)

// lostAnswerAPI stands in for a kube-apiserver whose answers can be lost:
// it applies every patch of the pod's labels at once, as etcd commits it,
// and can be told to answer the next patches that set the label only once
// the client has given up (a response lost in the network, a proxy that
// stalls, an API server that committed and then hung), or the next
// removals. It keeps the label as the pod would carry it.
type lostAnswerAPI struct {
	t        *testing.T
	srv      *httptest.Server
	mu       sync.Mutex
	label    *string // lockex.io/active on pod web-0, nil if absent
	loseSets int     // lose the answer to this many patches that set it
	loseRems int     // and to this many that remove it
	refusing bool    // answer every patch 503, applying none
	calls    int     // patches received
	lost     chan struct{}
}

func startLostAnswerAPI(t *testing.T) *lostAnswerAPI {
	a := &lostAnswerAPI{t: t, lost: make(chan struct{}, 16)}
	a.srv = httptest.NewTLSServer(http.HandlerFunc(a.serve))
	t.Cleanup(a.srv.Close)
	return a
}

func (a *lostAnswerAPI) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPatch || r.URL.Path != "/api/v1/namespaces/team-a/pods/web-0" {
		a.t.Errorf("unexpected call %s %s", r.Method, r.URL.Path)
		http.Error(w, "unexpected", http.StatusBadRequest)
		return
	}
	var patch struct {
		Metadata struct {
			Labels map[string]*string `json:"labels"`
		} `json:"metadata"`
	}
	body, _ := io.ReadAll(r.Body)
	if err := json.Unmarshal(body, &patch); err != nil {
		a.t.Errorf("patch %s: %v", body, err)
	}
	v, ok := patch.Metadata.Labels[activeLabel]
	if !ok {
		a.t.Errorf("patch %s: not of %s", body, activeLabel)
	}
	a.mu.Lock()
	a.calls++
	if a.refusing {
		a.mu.Unlock()
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte(`{"kind":"Status","message":"etcd is overloaded"}`))
		return
	}
	a.label = v
	lose := false
	switch {
	case v != nil && a.loseSets > 0:
		a.loseSets--
		lose = true
	case v == nil && a.loseRems > 0:
		a.loseRems--
		lose = true
	}
	a.mu.Unlock()
	if lose {
		a.lost <- struct{}{}
		// Committed; the answer never comes. Bounded: lockex gives up
		// after 5s.
		select {
		case <-r.Context().Done():
		case <-time.After(time.Minute):
		}
		return
	}
	_, _ = w.Write([]byte(`{"kind":"Pod"}`))
}

// value is the label as the pod carries it, "" if absent.
func (a *lostAnswerAPI) value() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.label == nil {
		return ""
	}
	return *a.label
}

func (a *lostAnswerAPI) loseNextSet() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.loseSets = 1
}

func (a *lostAnswerAPI) loseNextRemoval() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.loseRems = 1
}

// env is what lockex in pod web-0 of namespace team-a sees.
func (a *lostAnswerAPI) env(t *testing.T) []string {
	dir := t.TempDir()
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: a.srv.Certificate().Raw})
	for name, content := range map[string][]byte{"token": []byte("tok-1"), "ca.crt": ca, "namespace": []byte("team-a")} {
		if err := os.WriteFile(filepath.Join(dir, name), content, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	host, port, _ := net.SplitHostPort(a.srv.Listener.Addr().String())
	return []string{"KUBERNETES_SERVICE_HOST=" + host, "KUBERNETES_SERVICE_PORT=" + port,
		"LOCKEX_SERVICEACCOUNT_DIR=" + dir, "LOCKEX_POD_NAME=web-0"}
}

// TestReviewLabelLeftOnAfterLostAnswer: the API server applies lockex's
// patch that sets the label, and its answer is lost (lockex's request
// times out). lockex then takes the outcome for "not applied", so when the
// pod stops being active (its workload fails its check) it sees nothing
// to remove: the pod stays Ready (/readyz) and labelled, and the Service
// sends traffic to a workload that /active says is not ready, for as long
// as that lasts. design.md §8: the label is on "while it is active ...
// and takes it off when it is not"; a failed patch is retried "until it
// succeeds or the wish changes" - here the wish changed back to what lockex
// wrongly believes the pod carries.
func TestReviewLabelLeftOnAfterLostAnswer(t *testing.T) {
	zk := startZK(t)
	api := startLostAnswerAPI(t)
	w := newReadyServer(t)
	args := []string{"-z", zk.Hosts(), "-i", "review-label", "--active-http", "http://" + w.addr + "/ready",
		"--active-period", "100ms", "--active-failure-threshold", "1", "--active-label", activeLabel + "=true", "--"}
	o := startObserved(t, api.env(t), append(args, w.argv()...)...)
	eventually(t, 15*time.Second, "the workload starts", func() bool { return w.noted("start") })

	api.loseNextSet()
	w.touch("serve")
	select {
	case <-api.lost:
	case <-time.After(15 * time.Second):
		t.Fatalf("lockex never set the label; log:\n%s", o.stderr)
	}
	// The pod carries the label now; the answer is on its way to nowhere.
	// The workload stops being ready before lockex gives up on it.
	w.touch("sick")
	if code := o.activeAfter(t, "503 Service Unavailable"); code != 503 {
		t.Fatalf("workload not ready: /active %d, want 503", code)
	}
	// lockex gives up on the lost answer after 5s; then it has all it needs
	// to know the pod may carry the label while not active.
	deadline := time.Now().Add(20 * time.Second)
	for api.value() != "" && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	code, body := o.get(t, "/active")
	if v := api.value(); v != "" && code != 200 {
		t.Errorf("20s after the lost answer the pod still carries %s=%s while /active answers %d (%s): "+
			"a Service routes to a workload that is not ready; log:\n%s", activeLabel, v, code, body, o.stderr)
	}
}

// TestReviewLabelLeftOffAfterLostAnswer: the mirror image. The removal is
// applied and its answer lost; the workload is ready again before lockex
// gives up on it. lockex believes the pod still carries the label, so it
// never sets it again: the holder is active (/active 200) and no Service
// reaches it - the singleton serves nobody until its readiness flaps again.
func TestReviewLabelLeftOffAfterLostAnswer(t *testing.T) {
	zk := startZK(t)
	api := startLostAnswerAPI(t)
	w := newReadyServer(t)
	args := []string{"-z", zk.Hosts(), "-i", "review-label-off", "--active-http", "http://" + w.addr + "/ready",
		"--active-period", "100ms", "--active-failure-threshold", "1", "--active-label", activeLabel + "=true", "--"}
	o := startObserved(t, api.env(t), append(args, w.argv()...)...)
	eventually(t, 15*time.Second, "the workload starts", func() bool { return w.noted("start") })
	w.touch("serve")
	eventually(t, 15*time.Second, "the label is set", func() bool { return api.value() == "true" })

	api.loseNextRemoval()
	w.touch("sick")
	select {
	case <-api.lost:
	case <-time.After(15 * time.Second):
		t.Fatalf("lockex never removed the label; log:\n%s", o.stderr)
	}
	w.remove("sick")
	eventually(t, 15*time.Second, "active again", func() bool { code, _ := o.get(t, "/active"); return code == 200 })
	deadline := time.Now().Add(20 * time.Second)
	for api.value() != "true" && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	code, body := o.get(t, "/active")
	if v := api.value(); v != "true" && code == 200 {
		t.Errorf("20s after the lost answer the pod carries %s=%q while /active answers 200 (%s): "+
			"no Service reaches the holder; log:\n%s", activeLabel, v, body, o.stderr)
	}
}

// TestReviewLabelLeftOnAfterExit: the same lost answer, and the workload
// ends before lockex gets one. lockex exits, and "as lockex exits it
// removes the label" (design.md §8) does not happen: it believes the pod
// never got it.
func TestReviewLabelLeftOnAfterExit(t *testing.T) {
	zk := startZK(t)
	api := startLostAnswerAPI(t)
	dir := t.TempDir()
	s := startLockex(t, append(api.env(t), "D="+dir), "--http-addr", "127.0.0.1:0", "-z", zk.Hosts(), "-i", "review-label-exit",
		"--active-label", activeLabel+"=true", "--",
		"sh", "-c", `echo ready > "$D/ready"; while [ ! -e "$D/go" ]; do sleep 0.01; done`)
	// Without a check the label is set as the workload starts; lose the
	// answer to that set. The removal at start comes first, and is answered.
	api.loseNextSet()
	waitFile(t, filepath.Join(dir, "ready"))
	select {
	case <-api.lost:
	case <-time.After(15 * time.Second):
		t.Fatalf("lockex never set the label; log:\n%s", s.stderr)
	}
	if err := os.WriteFile(filepath.Join(dir, "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if code := s.wait(t, 20*time.Second); code != 0 {
		t.Fatalf("exit %d; log:\n%s", code, s.stderr)
	}
	if v := api.value(); v != "" {
		t.Errorf("lockex exited and left its pod labelled %s=%s; log:\n%s", activeLabel, v, s.stderr)
	}
}

// hungAPI is an API server that accepts connections and never says a word:
// not even the TLS handshake is answered. It holds what it accepted until
// the test ends.
func hungAPI(t *testing.T) (host, port string) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var held []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			c.Close()
		}
	})
	host, port, _ = net.SplitHostPort(ln.Addr().String())
	return host, port
}

// TestReviewHungAPIServerDuringPartition: with --active-label and an API
// server that hangs, a holder cut off from ZooKeeper whose workload
// ignores SIGTERM still fences itself in time (SIGKILL by KillBy), exits
// 76, and the next holder's workload never runs beside it: the label is
// never on the path of the stop or the release (design.md §8). It passes;
// it guards against a label change made synchronous with the stop.
func TestReviewHungAPIServerDuringPartition(t *testing.T) {
	zk := startZK(t)
	conn := zkClient(t, zk.Hosts())
	proxy := zktest.StartProxy(t, zk.Servers[0].Addr())
	host, port := hungAPI(t)
	sa := t.TempDir()
	for name, content := range map[string]string{"token": "tok-1", "namespace": "team-a",
		"ca.crt": string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: startLostAnswerAPI(t).srv.Certificate().Raw}))} {
		if err := os.WriteFile(filepath.Join(sa, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	env := func(pod string) []string {
		return []string{"KUBERNETES_SERVICE_HOST=" + host, "KUBERNETES_SERVICE_PORT=" + port,
			"LOCKEX_SERVICEACCOUNT_DIR=" + sa, "LOCKEX_POD_NAME=" + pod}
	}
	label := []string{"--active-label", activeLabel + "=true"}
	logPath := filepath.Join(t.TempDir(), "log")
	a := startLockex(t, env("web-a"), append(label, lossArgs(proxy.Addr(), "hung-api", ticker(logPath, "a", 0, true))...)...)
	waitRecord(t, logPath, "a")
	b := startLockex(t, env("web-b"), append(label, lossArgs(zk.Hosts(), "hung-api", ticker(logPath, "b", 200*time.Millisecond, false))...)...)
	eventually(t, 10*time.Second, "b waits", func() bool { return len(children(t, conn, "/lockex/hung-api")) == 2 })

	proxy.Stall()
	stalled := time.Now()
	if code := a.wait(t, 15*time.Second); code != 76 {
		t.Fatalf("holder exit %d, want 76; log:\n%s", code, a.stderr)
	}
	t.Logf("holder exited 76 %s after the stall", time.Since(stalled).Round(time.Millisecond))
	if code := b.wait(t, 20*time.Second); code != 0 {
		t.Fatalf("contender exit %d; log:\n%s", code, b.stderr)
	}
	mustBeOneAtATime(t, logPath)
	if log := a.stderr.String(); !strings.Contains(log, "SIGKILL") || !strings.Contains(log, "pod not patched at exit") {
		t.Errorf("want the SIGKILL at KillBy and the label's failure in the log:\n%s", log)
	}
}

// TestReviewLabelRetriesAtCheckRate: while the API server refuses, a failed
// patch is to be retried "0.5s, doubling to 10s" (design.md §8): at most
// about 5 tries in 10s. But every change of the status record calls Set,
// a readiness check's result included, and Run stops the backoff timer on
// each Set and patches at once: lockex retries at the rate of
// --active-period (here 100ms; 1s by the chart's default), for as long as
// the API server is down. Every pod of the fleet does, against an API server
// that may be refusing because it is overloaded.
func TestReviewLabelRetriesAtCheckRate(t *testing.T) {
	zk := startZK(t)
	api := startLostAnswerAPI(t)
	api.mu.Lock()
	api.refusing = true
	api.mu.Unlock()
	w := newReadyServer(t)
	args := []string{"-z", zk.Hosts(), "-i", "review-label-retry", "--active-http", "http://" + w.addr + "/ready",
		"--active-period", "100ms", "--active-label", activeLabel + "=true", "--"}
	o := startObserved(t, api.env(t), append(args, w.argv()...)...)
	eventually(t, 15*time.Second, "the workload starts", func() bool { return w.noted("start") })
	w.touch("serve")
	eventually(t, 15*time.Second, "active", func() bool { code, _ := o.get(t, "/active"); return code == 200 })
	api.mu.Lock()
	before := api.calls
	api.mu.Unlock()
	window := 10 * time.Second
	time.Sleep(window)
	api.mu.Lock()
	n := api.calls - before
	api.mu.Unlock()
	// The schedule allows tries at 0, 0.5, 1.5, 3.5 and 7.5s of a streak:
	// 5; twice that leaves room for a streak that began just before.
	if n > 10 {
		t.Errorf("%d patches in %s against an API server that refuses them all, want at most 10 (0.5s doubling to 10s)", n, window)
	}
}
