package e2e

import (
	"fmt"
	"net/http"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/lockex/lockex/internal/kubetest"
)

// defaultRollouts is how many rolling updates TestDeploymentHandovers makes
// in a row, unless LOCKEX_ROLLOUTS says otherwise.
const defaultRollouts = 20

// chartNamespace makes namespace ns with the service account web bound to
// the chart's Role for --active-label and --deletion-cost: get and patch
// pods, in ns only.
func (a *kubeAPI) chartNamespace(t *testing.T, ns string) {
	t.Helper()
	a.Create(t, "/api/v1/namespaces", map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": ns}})
	a.Create(t, "/api/v1/namespaces/"+ns+"/serviceaccounts", map[string]any{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": map[string]any{"name": "web"}})
	a.Create(t, "/apis/rbac.authorization.k8s.io/v1/namespaces/"+ns+"/roles", map[string]any{
		"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": map[string]any{"name": "web"},
		"rules": []any{map[string]any{"apiGroups": []string{""}, "resources": []string{"pods"}, "verbs": []string{"get", "patch"}}},
	})
	a.Create(t, "/apis/rbac.authorization.k8s.io/v1/namespaces/"+ns+"/rolebindings", map[string]any{
		"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": map[string]any{"name": "web"},
		"roleRef":  map[string]any{"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "web"},
		"subjects": []any{map[string]any{"kind": "ServiceAccount", "name": "web", "namespace": ns}},
	})
}

// startDeploymentCluster is a real kube-apiserver and kube-controller-manager
// with namespace ns, the service account web bound to the chart's Role
// (get and patch pods), a Deployment "web" of replicas singleton pods (lockex with
// --active-label and --deletion-cost around a ticker), and a kubelet
// stand-in running them against a real ZooKeeper.
func startDeploymentCluster(t *testing.T, ns string, replicas int) (*kubeAPI, *kubelet) {
	api := &kubeAPI{kubetest.Start(t, kubetest.ControllerManager())}
	zk := startZK(t)
	api.chartNamespace(t, ns)
	k := newKubelet(t, api, zk.Hosts(), ns,
		"-i", "web", "--active-label", activeLabel+"=true", "--deletion-cost")
	api.Create(t, "/apis/apps/v1/namespaces/"+ns+"/deployments", map[string]any{
		"apiVersion": "apps/v1", "kind": "Deployment", "metadata": map[string]any{"name": "web"},
		"spec": map[string]any{
			"replicas": replicas,
			"selector": map[string]any{"matchLabels": map[string]any{"app": "web"}},
			// The chart's singleton strategy: a new pod first, and an old
			// one deleted only once the new one is Ready (a connected
			// standby), so the holder is deleted last of its version.
			"strategy": map[string]any{"type": "RollingUpdate", "rollingUpdate": map[string]any{"maxSurge": 1, "maxUnavailable": 0}},
			"template": podTemplate("v1"),
		},
	})
	k.until(60*time.Second, "the Deployment's first pods settle", func() bool { return k.settled(replicas, "v1") })
	return api, k
}

func podTemplate(version string) map[string]any {
	return map[string]any{
		"metadata": map[string]any{"labels": map[string]any{"app": "web", "version": version}},
		"spec": map[string]any{
			"serviceAccountName":            "web",
			"terminationGracePeriodSeconds": 10,
			"containers":                    []any{map[string]any{"name": "app", "image": "registry.example.com/web:" + version}},
		},
	}
}

func (a *kubeAPI) patchDeployment(t *testing.T, ns string, spec map[string]any) {
	t.Helper()
	path := "/apis/apps/v1/namespaces/" + ns + "/deployments/web"
	if code, body, err := a.Do(http.MethodPatch, path, a.AdminToken(), map[string]any{"spec": spec}); err != nil || code != http.StatusOK {
		t.Fatalf("PATCH %s: %d %v\n%s", path, code, err, body)
	}
}

// TestDeploymentHandovers drives a singleton Deployment (lockex with
// --active-label and --deletion-cost) with the real Deployment, ReplicaSet
// and disruption controllers, on one control plane for all three parts
// (each start of one costs seconds):
//
//   - Rolling updates: every rolling update of 2 replicas hands the lock
//     over exactly once, to a pod of the new version: the old standby is
//     deleted first, and the old holder last. Each starts from the state
//     the one before left, holder and standby known to the API server by
//     their cost, only the holder labelled for a Service; throughout, the
//     Deployment keeps RollingUpdate and a disruption budget that counts
//     the standby as healthy.
//   - Scale-down: from 3 replicas to 1 deletes the two standbys and keeps
//     the holder, which never stops.
//   - Rolling updates with the chart's strategy under hard anti-affinity
//     (maxSurge 0, maxUnavailable 1) hand over once too.
//   - Routing: a Service selecting the label, whose EndpointSlices the
//     real EndpointSlice controller keeps, lists the holder alone, ready,
//     after the first pods, after every rolling update and after the
//     scale-down.
//   - RBAC: the token lockex patches its pod with (the chart's Role, bound
//     in the release's namespace) may patch a pod of its namespace and no
//     pod of another.
func TestDeploymentHandovers(t *testing.T) {
	n := defaultRollouts
	if s := os.Getenv("LOCKEX_ROLLOUTS"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil || n < 1 {
			t.Fatalf("LOCKEX_ROLLOUTS=%q: want a count of at least 1", s)
		}
	}
	const ns = "team-a"
	api, k := startDeploymentCluster(t, ns, 2)
	// The chart's disruption budget: with every connected standby Ready,
	// it allows one eviction, as it would without lockex.
	api.Create(t, "/apis/policy/v1/namespaces/"+ns+"/poddisruptionbudgets", map[string]any{
		"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": map[string]any{"name": "web"},
		"spec": map[string]any{"maxUnavailable": 1, "selector": map[string]any{"matchLabels": map[string]any{"app": "web"}}},
	})

	// The chart's Service for routeToActive: the real EndpointSlice
	// controller turns its selector into the addresses a proxy routes to.
	api.Create(t, "/api/v1/namespaces/"+ns+"/services", map[string]any{
		"apiVersion": "v1", "kind": "Service", "metadata": map[string]any{"name": "web"},
		"spec": map[string]any{
			"selector": map[string]any{"app": "web", activeLabel: "true"},
			"ports":    []any{map[string]any{"port": 80, "targetPort": 8080}},
		},
	})
	k.service = "web"
	var routing time.Duration // spent waiting for the Service to follow
	routesToHolder := func(when string) {
		t0 := time.Now()
		k.until(30*time.Second, when+": the Service's EndpointSlices list the holder alone, ready", func() bool { return k.routesToHolder("web") })
		routing += time.Since(t0)
	}
	routesToHolder("first pods")

	rollouts, version := 0, "v1"
	rollout := func(strategy string) {
		rollouts++
		version = fmt.Sprintf("v%d", rollouts+1)
		before := k.holder()
		t0 := time.Now()
		api.patchDeployment(t, ns, map[string]any{"template": podTemplate(version)})
		k.until(60*time.Second, "rollout to "+version+" settles", func() bool {
			// The holder's workload writes its start to the runs' log a
			// moment after lockex reports it running: wait for that line.
			if !k.settled(2, version) {
				return false
			}
			h := k.holder()
			for _, r := range k.runsSince(t0) {
				if h != nil && r.who == h.name {
					return true
				}
			}
			return false
		})
		runs := k.runsSince(t0)
		var whos []string
		for _, r := range runs {
			whos = append(whos, r.who+"@"+k.versionOf(r))
		}
		if len(runs) != 1 || k.versionOf(runs[0]) != version {
			t.Errorf("rollout %d (%s, %s, holder before %s): the lock went to %v, want once to a pod of %s\n%s",
				rollouts, version, strategy, before.name, whos, version, k.describe())
			return
		}
		t.Logf("rollout %d to %s (%s): %s handed over to %s in %v", rollouts, version, strategy, before.name, whos[0], time.Since(t0).Round(time.Millisecond))
		routesToHolder("rollout to " + version)
	}
	for range n {
		rollout("maxSurge 1")
	}
	var pdb struct {
		Status struct {
			CurrentHealthy     int `json:"currentHealthy"`
			ExpectedPods       int `json:"expectedPods"`
			DisruptionsAllowed int `json:"disruptionsAllowed"`
		} `json:"status"`
	}
	k.until(30*time.Second, "the disruption budget counts holder and standby healthy", func() bool {
		api.Get(t, "/apis/policy/v1/namespaces/"+ns+"/poddisruptionbudgets/web", &pdb)
		return pdb.Status.ExpectedPods == 2 && pdb.Status.CurrentHealthy == 2 && pdb.Status.DisruptionsAllowed == 1
	})

	// Scale-down.
	api.patchDeployment(t, ns, map[string]any{"replicas": 3})
	k.until(60*time.Second, "scaled to 3", func() bool { return k.settled(3, version) })
	holder := k.holder()
	t0 := time.Now()
	api.patchDeployment(t, ns, map[string]any{"replicas": 1})
	k.until(60*time.Second, "scaled to 1", func() bool { return k.settled(1, version) })
	if h := k.holder(); h != holder {
		t.Errorf("after the scale-down from 3 to 1 the holder is %s, want %s still\n%s", h.name, holder.name, k.describe())
	}
	if runs := k.runsSince(t0); len(runs) != 0 {
		t.Errorf("%d workloads started during the scale-down, want none (the holder kept the lock)", len(runs))
	}
	routesToHolder("scaled to 1")

	// The chart's strategy under hard anti-affinity, one node per replica:
	// an old pod goes before a new one comes. The old standby goes first,
	// so the lock still moves once.
	api.patchDeployment(t, ns, map[string]any{"replicas": 2,
		"strategy": map[string]any{"rollingUpdate": map[string]any{"maxSurge": 0, "maxUnavailable": 1}}})
	k.until(60*time.Second, "scaled to 2", func() bool { return k.settled(2, version) })
	for range 3 {
		rollout("maxUnavailable 1")
	}
	mustBeOneAtATime(t, k.logPath)
	// Routing by the label cost the Deployment nothing: it still rolls,
	// and the disruption budget still stands.
	var deployment struct {
		Spec struct {
			Strategy struct {
				Type string `json:"type"`
			} `json:"strategy"`
		} `json:"spec"`
	}
	api.Get(t, "/apis/apps/v1/namespaces/"+ns+"/deployments/web", &deployment)
	if deployment.Spec.Strategy.Type != "RollingUpdate" {
		t.Errorf("the Deployment's strategy is %q, want RollingUpdate", deployment.Spec.Strategy.Type)
	}
	k.until(30*time.Second, "the disruption budget counts holder and standby healthy", func() bool {
		api.Get(t, "/apis/policy/v1/namespaces/"+ns+"/poddisruptionbudgets/web", &pdb)
		return pdb.Status.ExpectedPods == 2 && pdb.Status.CurrentHealthy == 2 && pdb.Status.DisruptionsAllowed == 1
	})
	t.Logf("waiting for the Service to follow the holder took %v in all", routing.Round(time.Millisecond))

	// RBAC.
	api.Create(t, "/api/v1/namespaces", map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": "team-b"}})
	// No serviceaccount controller runs to make team-b's default account.
	api.Create(t, "/api/v1/namespaces/team-b/serviceaccounts", map[string]any{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": map[string]any{"name": "default"}})
	api.Create(t, "/api/v1/namespaces/team-b/pods", map[string]any{
		"apiVersion": "v1", "kind": "Pod", "metadata": map[string]any{"name": "other"},
		"spec": map[string]any{"containers": []any{map[string]any{"name": "app", "image": "registry.example.com/other:1"}}},
	})
	own := k.holder()
	token, err := os.ReadFile(api.serviceAccountDir(t, ns, "web", own.name, own.uid) + "/token")
	if err != nil {
		t.Fatal(err)
	}
	patch := map[string]any{"metadata": map[string]any{"labels": map[string]any{"rbac-check": "yes"}}}
	for _, tc := range []struct {
		path string
		want int
	}{
		{"/api/v1/namespaces/" + ns + "/pods/" + own.name, http.StatusOK},
		{"/api/v1/namespaces/team-b/pods/other", http.StatusForbidden},
	} {
		code, body, err := api.Do(http.MethodPatch, tc.path, string(token), patch)
		if err != nil || code != tc.want {
			t.Errorf("PATCH %s with the pod's token: %d %v, want %d\n%s", tc.path, code, err, tc.want, body)
		}
	}
	if _, labelled := api.podLabels(t, "team-b", "other")["rbac-check"]; labelled {
		t.Error("the pod in team-b was labelled")
	}
}
