package kubetest

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestRepoRootHoldsTheInstallScript(t *testing.T) {
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, installScript)); err != nil {
		t.Errorf("repoRoot() = %s, which has no %s: %v", root, installScript, err)
	}
}

// TestTokensAndRBAC checks what callers rely on: each named user is
// authenticated as itself and may do nothing RBAC has not granted, the
// admin may do anything, an unknown token is refused, and a PATCH is
// applied.
func TestTokensAndRBAC(t *testing.T) {
	c := Start(t, Users("alice", "bob"))

	whoAmI := func(token string) (int, string) {
		t.Helper()
		code, body, err := c.Do(http.MethodPost, "/apis/authentication.k8s.io/v1/selfsubjectreviews", token,
			map[string]any{"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
		if err != nil {
			t.Fatal(err)
		}
		var review struct {
			Status struct {
				UserInfo struct {
					Username string `json:"username"`
				} `json:"userInfo"`
			} `json:"status"`
		}
		_ = json.Unmarshal(body, &review)
		return code, review.Status.UserInfo.Username
	}
	for token, want := range map[string]string{
		c.AdminToken(): adminUser, c.UserToken(t, "alice"): "alice", c.UserToken(t, "bob"): "bob",
	} {
		if code, got := whoAmI(token); code != http.StatusCreated || got != want {
			t.Errorf("token of %s: authenticated as %q (%d)", want, got, code)
		}
	}
	if code, _ := whoAmI("not-a-token"); code != http.StatusUnauthorized {
		t.Errorf("unknown token: %d, want %d", code, http.StatusUnauthorized)
	}

	c.Create(t, "/api/v1/namespaces", map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": "team-a"}})
	if code, body, err := c.Do(http.MethodGet, "/api/v1/namespaces/team-a/pods", c.UserToken(t, "alice"), nil); err != nil || code != http.StatusForbidden {
		t.Errorf("alice lists pods without a role: %d %v, want %d\n%s", code, err, http.StatusForbidden, body)
	}
	patch := map[string]any{"metadata": map[string]any{"labels": map[string]any{"team": "a"}}}
	if code, body, err := c.Do(http.MethodPatch, "/api/v1/namespaces/team-a", c.AdminToken(), patch); err != nil || code != http.StatusOK {
		t.Fatalf("PATCH namespace: %d %v\n%s", code, err, body)
	}
	var ns struct {
		Metadata struct {
			Labels map[string]string `json:"labels"`
		} `json:"metadata"`
	}
	c.Get(t, "/api/v1/namespaces/team-a", &ns)
	if got := ns.Metadata.Labels["team"]; got != "a" {
		t.Errorf("after the patch, label team=%q, want a", got)
	}
}

// TestControllerManager checks what the pod helpers stand in for and what
// tests of the deletion order rely on: the Deployment and ReplicaSet
// controllers run, pods bound and reported Ready count as available, the
// EndpointSlice controller lists a Service's pods by the IP reported, a
// scale-down deletes the pod with the lowest deletion cost gracefully, and
// FinishDeletion removes it.
func TestControllerManager(t *testing.T) {
	c := Start(t, ControllerManager())
	const ns = "team-a"
	c.Create(t, "/api/v1/namespaces", map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": ns}})
	c.Create(t, "/api/v1/namespaces/"+ns+"/serviceaccounts", map[string]any{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": map[string]any{"name": "web"}})
	c.CreateNode(t, "node-1")
	c.Create(t, "/apis/apps/v1/namespaces/"+ns+"/deployments", map[string]any{
		"apiVersion": "apps/v1", "kind": "Deployment", "metadata": map[string]any{"name": "web"},
		"spec": map[string]any{
			"replicas": 3,
			"selector": map[string]any{"matchLabels": map[string]any{"app": "web"}},
			"template": map[string]any{
				"metadata": map[string]any{"labels": map[string]any{"app": "web"}},
				"spec": map[string]any{"serviceAccountName": "web", "containers": []any{
					map[string]any{"name": "app", "image": "registry.example.com/web:1"}}},
			},
		},
	})

	var pods []Pod
	bound := 0
	within(t, 60*time.Second, "the ReplicaSet makes 3 pods, bound and Ready", func() bool {
		pods = c.Pods(t, ns, "app%3Dweb")
		for _, p := range pods {
			if p.Spec.NodeName == "" {
				c.BindPod(t, ns, p.Metadata.Name, "node-1")
				bound++
				c.SetPodRunning(t, ns, p.Metadata.Name, PodIP(bound), true)
			}
		}
		return len(pods) == 3 && pods[0].Ready() && pods[1].Ready() && pods[2].Ready()
	})
	c.Create(t, "/api/v1/namespaces/"+ns+"/services", map[string]any{
		"apiVersion": "v1", "kind": "Service", "metadata": map[string]any{"name": "web"},
		"spec": map[string]any{"selector": map[string]any{"app": "web"}, "ports": []any{map[string]any{"port": 80}}},
	})
	var ready []string
	if !eventually(30*time.Second, func() bool {
		var slices struct {
			Items []struct {
				Endpoints []struct {
					Addresses  []string `json:"addresses"`
					Conditions struct {
						Ready bool `json:"ready"`
					} `json:"conditions"`
				} `json:"endpoints"`
			} `json:"items"`
		}
		c.Get(t, "/apis/discovery.k8s.io/v1/namespaces/"+ns+"/endpointslices?labelSelector=kubernetes.io%2Fservice-name%3Dweb", &slices)
		ready = nil
		for _, s := range slices.Items {
			for _, e := range s.Endpoints {
				if e.Conditions.Ready {
					ready = append(ready, e.Addresses...)
				}
			}
		}
		return len(ready) == 3
	}) {
		t.Fatalf("the Service's EndpointSlices list %v ready, want the 3 pods' addresses\n%s", ready, c.logTails())
	}
	within(t, 30*time.Second, "the Deployment counts 3 available", func() bool {
		var d struct {
			Status struct {
				AvailableReplicas int `json:"availableReplicas"`
			} `json:"status"`
		}
		c.Get(t, "/apis/apps/v1/namespaces/"+ns+"/deployments/web", &d)
		return d.Status.AvailableReplicas == 3
	})

	// The newest pod is the one a ReplicaSet deletes first when nothing
	// else tells them apart; the costs must override that both ways.
	costs := map[string]string{pods[0].Metadata.Name: "-5", pods[1].Metadata.Name: "10", pods[2].Metadata.Name: "0"}
	for name, cost := range costs {
		patch := map[string]any{"metadata": map[string]any{"annotations": map[string]any{"controller.kubernetes.io/pod-deletion-cost": cost}}}
		if code, body, err := c.Do(http.MethodPatch, "/api/v1/namespaces/"+ns+"/pods/"+name, c.AdminToken(), patch); err != nil || code != http.StatusOK {
			t.Fatalf("PATCH pod %s: %d %v\n%s", name, code, err, body)
		}
	}
	if code, body, err := c.Do(http.MethodPatch, "/apis/apps/v1/namespaces/"+ns+"/deployments/web", c.AdminToken(),
		map[string]any{"spec": map[string]any{"replicas": 1}}); err != nil || code != http.StatusOK {
		t.Fatalf("scale to 1: %d %v\n%s", code, err, body)
	}
	within(t, 30*time.Second, "two pods are being deleted", func() bool {
		deleting := 0
		for _, p := range c.Pods(t, ns, "app%3Dweb") {
			if p.Deleting() {
				deleting++
			}
		}
		return deleting == 2
	})
	for _, p := range c.Pods(t, ns, "app%3Dweb") {
		if p.Deleting() {
			if p.Metadata.Name == pods[1].Metadata.Name {
				t.Errorf("the pod of cost 10 is deleted, costs %v", costs)
			}
			c.FinishDeletion(t, ns, p.Metadata.Name, p.Metadata.UID)
		}
	}
	if left := c.Pods(t, ns, "app%3Dweb"); len(left) != 1 || left[0].Metadata.Name != pods[1].Metadata.Name {
		t.Errorf("after the scale-down: %d pods, want only %s", len(left), pods[1].Metadata.Name)
	}
}

// eventually polls cond until it holds, for at most d.
func eventually(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(100 * time.Millisecond)
	}
	return true
}

// within polls cond until it holds, failing the test after d.
func within(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", d, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
