package e2e

import (
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// activeLabel is the label the chart's routeToActive has lockex keep, and
// its Service select.
const activeLabel = "lockex.io/active"

// TestActiveLabel runs two lockex, as two pods of a Deployment with
// routeToActive would, against a real kube-apiserver: each labels its own
// pod, through a service account token the API server issued for that pod
// and only the chart's Role (get and patch pods), while it is active, so a selector
// on the label (a Service's) picks the one pod whose workload serves; a
// stale label is removed at start; the label moves with the lock; and a
// refusal by RBAC is retried until the binding exists.
func TestActiveLabel(t *testing.T) {
	api := startKubeAPI(t)
	zk := startZK(t)
	const ns = "team-a"
	api.Create(t, "/api/v1/namespaces", map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": ns}})
	api.Create(t, "/api/v1/namespaces/"+ns+"/serviceaccounts", map[string]any{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": map[string]any{"name": "web"}})
	// The chart's Role (templates/rbac.yaml), bound later: first lockex
	// meets a refusal.
	api.Create(t, "/apis/rbac.authorization.k8s.io/v1/namespaces/"+ns+"/roles", map[string]any{
		"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": map[string]any{"name": "web"},
		"rules": []any{map[string]any{"apiGroups": []string{""}, "resources": []string{"pods"}, "verbs": []string{"get", "patch"}}},
	})
	pod := func(name string, labels map[string]string) string {
		p := api.Create(t, "/api/v1/namespaces/"+ns+"/pods", map[string]any{
			"apiVersion": "v1", "kind": "Pod",
			"metadata": map[string]any{"name": name, "labels": labels},
			"spec": map[string]any{"serviceAccountName": "web", "containers": []any{
				map[string]any{"name": "app", "image": "registry.example.com/web:1"}}},
		})
		return p["metadata"].(map[string]any)["uid"].(string)
	}
	// web-a carries the label already, as a pod whose earlier lockex died
	// while active would.
	uidA := pod("web-a", map[string]string{"app": "web", activeLabel: "true"})
	uidB := pod("web-b", map[string]string{"app": "web"})

	start := func(name, uid string, w *readyServer) *observed {
		env := []string{
			"KUBERNETES_SERVICE_HOST=" + api.Host(), "KUBERNETES_SERVICE_PORT=" + api.Port(),
			"LOCKEX_SERVICEACCOUNT_DIR=" + api.serviceAccountDir(t, ns, "web", name, uid),
			"LOCKEX_POD_NAME=" + name,
		}
		args := []string{"-z", zk.Hosts(), "-i", "web", "--active-tcp", w.addr, "--active-period", "100ms",
			"--active-label", activeLabel + "=true", "--"}
		return startObserved(t, env, append(args, w.argv()...)...)
	}
	selected := func() []string { return api.selected(t, ns, activeLabel+"%3Dtrue") }

	wa := newReadyServer(t)
	a := start("web-a", uidA, wa)
	eventually(t, 15*time.Second, "a's workload starts", func() bool { return wa.noted("start") })
	// Forbidden: no binding yet. lockex says so once and retries.
	eventually(t, 15*time.Second, "a reports the refusal", func() bool {
		return strings.Contains(a.stderr.String(), "cannot patch the pod; retrying")
	})
	if log := a.stderr.String(); !strings.Contains(log, "forbidden") || !strings.Contains(log, "system:serviceaccount:"+ns+":web") {
		t.Errorf("the refusal does not say who was forbidden what:\n%s", log)
	}
	api.Create(t, "/apis/rbac.authorization.k8s.io/v1/namespaces/"+ns+"/rolebindings", map[string]any{
		"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": map[string]any{"name": "web"},
		"roleRef":  map[string]any{"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "web"},
		"subjects": []any{map[string]any{"kind": "ServiceAccount", "name": "web", "namespace": ns}},
	})
	// Allowed now: the stale label goes, since a's workload does not serve.
	eventually(t, 30*time.Second, "the stale label is removed from web-a", func() bool {
		_, ok := api.podLabels(t, ns, "web-a")[activeLabel]
		return !ok
	})
	if got := selected(); len(got) != 0 {
		t.Errorf("workload not serving: %s selects %v, want none", activeLabel, got)
	}

	wa.touch("serve")
	eventually(t, 15*time.Second, "web-a labelled once its workload serves", func() bool {
		return api.podLabels(t, ns, "web-a")[activeLabel] == "true"
	})
	if got := api.podLabels(t, ns, "web-a")["app"]; got != "web" {
		t.Errorf("web-a's other labels lost: app=%q", got)
	}

	wb := newReadyServer(t)
	wb.touch("serve") // its server would answer at once: the lock decides
	b := start("web-b", uidB, wb)
	b.activeAfter(t, "contenders ahead")
	if got := selected(); !slices.Equal(got, []string{"web-a"}) {
		t.Errorf("b waiting: %s selects %v, want [web-a]", activeLabel, got)
	}

	// The holder stops: its label goes, the standby's comes once its
	// workload serves.
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	a.wait(t, 15*time.Second)
	eventually(t, 15*time.Second, "the label moves to web-b", func() bool {
		return slices.Equal(selected(), []string{"web-b"})
	})
	_ = b.cmd.Process.Signal(syscall.SIGTERM)
	b.wait(t, 15*time.Second)
	if got := selected(); len(got) != 0 {
		t.Errorf("after both stopped: %s selects %v, want none", activeLabel, got)
	}
}
