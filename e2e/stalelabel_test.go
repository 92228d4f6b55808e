package e2e

import (
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lockex/lockex/internal/kubetest"
	"github.com/lockex/lockex/internal/podlabel"
)

// labelledNamespace makes namespace ns with the service account web bound
// to the chart's Role for --active-label and --deletion-cost (get and
// patch pods), and one pod per name, not running: a test runs their
// lockex on the host. It returns the pods' UIDs by name.
func labelledNamespace(t *testing.T, api *kubeAPI, ns string, pods ...string) map[string]string {
	t.Helper()
	api.Create(t, "/api/v1/namespaces", map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": ns}})
	api.Create(t, "/api/v1/namespaces/"+ns+"/serviceaccounts", map[string]any{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": map[string]any{"name": "web"}})
	api.Create(t, "/apis/rbac.authorization.k8s.io/v1/namespaces/"+ns+"/roles", map[string]any{
		"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": map[string]any{"name": "web"},
		"rules": []any{map[string]any{"apiGroups": []string{""}, "resources": []string{"pods"}, "verbs": []string{"get", "patch"}}},
	})
	api.Create(t, "/apis/rbac.authorization.k8s.io/v1/namespaces/"+ns+"/rolebindings", map[string]any{
		"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": map[string]any{"name": "web"},
		"roleRef":  map[string]any{"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "web"},
		"subjects": []any{map[string]any{"kind": "ServiceAccount", "name": "web", "namespace": ns}},
	})
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
