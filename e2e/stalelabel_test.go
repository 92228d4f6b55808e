package e2e

import (
	"encoding/json"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lockex/lockex/internal/kubetest"
	"github.com/lockex/lockex/internal/podlabel"
	"github.com/lockex/lockex/internal/zktest"
)

// labelledNamespace makes namespace ns as chartNamespace does, and one pod
// per name, not running: a test runs their lockex on the host. It returns
// the pods' UIDs by name.
func labelledNamespace(t *testing.T, api *kubeAPI, ns string, pods ...string) map[string]string {
	t.Helper()
	api.chartNamespace(t, ns)
	uids := map[string]string{}
	for _, name := range pods {
		p := api.Create(t, "/api/v1/namespaces/"+ns+"/pods", map[string]any{
			"apiVersion": "v1", "kind": "Pod",
			"metadata": map[string]any{"name": name, "labels": map[string]any{"app": "web"}},
			"spec": map[string]any{"serviceAccountName": "web", "containers": []any{
				map[string]any{"name": "app", "image": "registry.example.com/web:1"}}},
		})
		uids[name] = p["metadata"].(map[string]any)["uid"].(string)
	}
	return uids
}

// podEnv is what lockex in pod name of ns sees, as the chart gives it.
func (a *kubeAPI) podEnv(t *testing.T, ns, name, uid string) []string {
	return []string{
		"KUBERNETES_SERVICE_HOST=" + a.Host(), "KUBERNETES_SERVICE_PORT=" + a.Port(),
		"LOCKEX_SERVICEACCOUNT_DIR=" + a.serviceAccountDir(t, ns, "web", name, uid),
		"LOCKEX_POD_NAMESPACE=" + ns, "LOCKEX_POD_NAME=" + name,
	}
}

// tellsHolder reports whether pod name of ns carries the label and the
// holder's cost (holder true), or neither label nor any cost but the
// standby's (holder false).
func (a *kubeAPI) tellsHolder(t *testing.T, ns, name string, holder bool) bool {
	t.Helper()
	var p kubetest.Pod
	a.Get(t, "/api/v1/namespaces/"+ns+"/pods/"+name, &p)
	cost := map[bool]string{true: podlabel.HolderCost, false: podlabel.StandbyCost}[holder]
	_, labelled := p.Metadata.Labels[activeLabel]
	return labelled == holder && p.Metadata.Annotations[podlabel.DeletionCostAnnotation] == cost
}

// TestKilledHolderLabelCorrected: a holder whose lockex is SIGKILLed (its
// workload dies with it, by the guardian) never removes its pod's label
// nor lowers its cost. The contender behind it learned its pod from its
// node's data while it waited; once it holds, after the session expired,
// it clears both on that pod, and its own pod tells the holder. The two
// workloads never overlap.
func TestKilledHolderLabelCorrected(t *testing.T) {
	api := startKubeAPI(t)
	zk := startZK(t)
	conn := zkClient(t, zk.Hosts())
	const ns = "team-a"
	uids := labelledNamespace(t, api, ns, "web-a", "web-b")
	logPath := filepath.Join(t.TempDir(), "log")
	start := func(pod, who string) *started {
		args := append([]string{"--active-label", activeLabel + "=true", "--deletion-cost"},
			lossArgs(zk.Hosts(), "stale", ticker(logPath, who, 0, false))...)
		return startLockex(t, api.podEnv(t, ns, pod, uids[pod]), args...)
	}
	a := start("web-a", "a")
	waitRecord(t, logPath, "a")
	eventually(t, 15*time.Second, "web-a tells the holder", func() bool { return api.tellsHolder(t, ns, "web-a", true) })
	b := start("web-b", "b")
	eventually(t, 10*time.Second, "b waits", func() bool { return len(children(t, conn, "/lockex/stale")) == 2 })
	eventually(t, 15*time.Second, "web-b tells a standby", func() bool { return api.tellsHolder(t, ns, "web-b", false) })

	killed := time.Now()
	_ = a.cmd.Process.Signal(syscall.SIGKILL)
	waitRecord(t, logPath, "b")
	eventually(t, 15*time.Second, "web-a, whose lockex was killed, tells a standby", func() bool {
		return api.tellsHolder(t, ns, "web-a", false)
	})
	t.Logf("web-a corrected %s after the SIGKILL (session timeout 4s)", time.Since(killed).Round(time.Millisecond))
	eventually(t, 15*time.Second, "web-b tells the holder", func() bool { return api.tellsHolder(t, ns, "web-b", true) })
	if log := b.stderr.String(); !strings.Contains(log, "cleared the label and cost the previous holder's pod kept") || !strings.Contains(log, "pod=web-a") {
		t.Errorf("b does not say it corrected web-a:\n%s", log)
	}
	_ = b.cmd.Process.Signal(syscall.SIGTERM)
	if code := b.wait(t, 15*time.Second); code != 143 {
		t.Errorf("b exit %d after SIGTERM, want 143; log:\n%s", code, b.stderr)
	}
	mustBeOneAtATime(t, logPath)
}

// labelWatch polls which pods of ns carry the label, with one list call
// (one state of the API server) every 20ms, until stop is called.
type labelWatch struct {
	mu      sync.Mutex
	polls   []labelPoll
	stop    chan struct{}
	stopped sync.Once
	done    chan struct{}
}

type labelPoll struct {
	at       time.Time // when the answer came: the state is no younger
	labelled []string
}

func (a *kubeAPI) watchLabels(t *testing.T, ns string) *labelWatch {
	w := &labelWatch{stop: make(chan struct{}), done: make(chan struct{})}
	t.Cleanup(func() { w.end() }) // a test that fails before end
	go func() {
		defer close(w.done)
		for {
			var list struct {
				Items []kubetest.Pod `json:"items"`
			}
			code, body, err := a.Do(http.MethodGet, "/api/v1/namespaces/"+ns+"/pods?labelSelector="+activeLabel+"%3Dtrue", a.AdminToken(), nil)
			if err == nil && code == http.StatusOK && json.Unmarshal(body, &list) == nil {
				p := labelPoll{at: time.Now()}
				for _, pod := range list.Items {
					p.labelled = append(p.labelled, pod.Metadata.Name)
				}
				w.mu.Lock()
				w.polls = append(w.polls, p)
				w.mu.Unlock()
			}
			select {
			case <-w.stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	return w
}

func (w *labelWatch) end() []labelPoll {
	w.stopped.Do(func() { close(w.stop) })
	<-w.done
	return w.polls
}

// TestLabelDrainsBeforeLoss: a holder cut off from ZooKeeper (a stall, or
// its connections cut), still reaching the API server, takes its pod's
// label off when it has heard nothing for half its budget, before its
// workload is stopped at the deadline: the API server shows the pod
// unlabelled before the workload's last record. The next holder gets the
// label; no state of the API server ever shows two pods labelled; the
// workloads never overlap.
func TestLabelDrainsBeforeLoss(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fault func(*zktest.Proxy)
	}{
		{"stall", (*zktest.Proxy).Stall},
		{"cut", (*zktest.Proxy).Cut},
	} {
		t.Run(tc.name, func(t *testing.T) { labelDrainsBeforeLoss(t, tc.fault) })
	}
}

func labelDrainsBeforeLoss(t *testing.T, fault func(*zktest.Proxy)) {
	api := startKubeAPI(t)
	zk := startZK(t)
	conn := zkClient(t, zk.Hosts())
	proxy := zktest.StartProxy(t, zk.Servers[0].Addr())
	const ns = "team-a"
	uids := labelledNamespace(t, api, ns, "web-a", "web-b")
	logPath := filepath.Join(t.TempDir(), "log")
	start := func(pod, hosts, who string) *started {
		args := append([]string{"--active-label", activeLabel + "=true", "--deletion-cost"},
			lossArgs(hosts, "drain-loss", ticker(logPath, who, 0, false))...)
		return startLockex(t, api.podEnv(t, ns, pod, uids[pod]), args...)
	}
	a := start("web-a", proxy.Addr(), "a")
	waitRecord(t, logPath, "a")
	eventually(t, 15*time.Second, "web-a tells the holder", func() bool { return api.tellsHolder(t, ns, "web-a", true) })
	b := start("web-b", zk.Hosts(), "b")
	eventually(t, 10*time.Second, "b waits", func() bool { return len(children(t, conn, "/lockex/drain-loss")) == 2 })
	eventually(t, 15*time.Second, "web-b tells a standby", func() bool { return api.tellsHolder(t, ns, "web-b", false) })

	watch := api.watchLabels(t, ns)
	fault(proxy)
	faulted := time.Now()
	if code := a.wait(t, 15*time.Second); code != 76 {
		t.Fatalf("holder exit %d, want 76; log:\n%s", code, a.stderr)
	}
	waitRecord(t, logPath, "b")
	eventually(t, 15*time.Second, "web-b tells the holder", func() bool { return api.tellsHolder(t, ns, "web-b", true) })
	eventually(t, 15*time.Second, "web-a tells a standby", func() bool { return api.tellsHolder(t, ns, "web-a", false) })
	polls := watch.end()

	var lastA int64
	for _, r := range readRuns(t, logPath) {
		if r.who == "a" {
			lastA = r.last
		}
	}
	var unlabelled time.Time
	for _, p := range polls {
		if p.at.After(faulted) && !slices.Contains(p.labelled, "web-a") {
			unlabelled = p.at
			break
		}
	}
	switch {
	case unlabelled.IsZero():
		t.Errorf("web-a never seen unlabelled; log:\n%s", a.stderr)
	case unlabelled.UnixNano() >= lastA:
		t.Errorf("web-a seen unlabelled %s after the fault, %s after its workload's last record: the label came off after the stop; log:\n%s",
			unlabelled.Sub(faulted).Round(time.Millisecond), time.Duration(unlabelled.UnixNano()-lastA).Round(time.Millisecond), a.stderr)
	default:
		t.Logf("web-a seen unlabelled %s after the fault, %s before its workload's last record",
			unlabelled.Sub(faulted).Round(time.Millisecond), time.Duration(lastA-unlabelled.UnixNano()).Round(time.Millisecond))
	}
	for _, p := range polls {
		if len(p.labelled) > 1 {
			t.Errorf("%s after the fault the API server showed %v labelled", p.at.Sub(faulted).Round(time.Millisecond), p.labelled)
		}
	}
	t.Logf("%d states of the API server polled", len(polls))
	_ = b.cmd.Process.Signal(syscall.SIGTERM)
	if code := b.wait(t, 15*time.Second); code != 143 {
		t.Errorf("b exit %d after SIGTERM, want 143; log:\n%s", code, b.stderr)
	}
	mustBeOneAtATime(t, logPath)
}
