package kubetest

import (
	"fmt"
	"net/http"
	"testing"
	"time"
)

// What a kubelet would do for the pods of a control plane that has none:
// no scheduler places a pod and no container runs, so a test binds each
// pod to a node, runs what the pod would run itself, and reports the pod's
// state through the API as the kubelet reports it.

// CreateNode registers a node that pods can be bound to. No node
// controller runs, so it is never tainted or found unreachable.
func (c *ControlPlane) CreateNode(t testing.TB, name string) {
	t.Helper()
	c.Create(t, "/api/v1/nodes", map[string]any{
		"apiVersion": "v1", "kind": "Node", "metadata": map[string]any{"name": name},
	})
}

// BindPod binds a pod to a node, as the scheduler does: from then on the
// API server deletes it gracefully, leaving it for the node's kubelet
// (FinishDeletion) to remove.
func (c *ControlPlane) BindPod(t testing.TB, ns, pod, node string) {
	t.Helper()
	c.Create(t, "/api/v1/namespaces/"+ns+"/pods/"+pod+"/binding", map[string]any{
		"apiVersion": "v1", "kind": "Binding", "metadata": map[string]any{"name": pod},
		"target": map[string]any{"apiVersion": "v1", "kind": "Node", "name": node},
	})
}

// SetPodReady reports a bound pod Running, and Ready or not, through the
// status subresource as the kubelet does once its readiness probe has
// answered. A ReplicaSet counts a Ready pod as available, and prefers to
// delete one that is not.
func (c *ControlPlane) SetPodReady(t testing.TB, ns, pod string, ready bool) {
	t.Helper()
	c.SetPodRunning(t, ns, pod, "", ready)
}

// SetPodRunning is SetPodReady with the pod's IP, which the kubelet reports
// with the pod's status and an EndpointSlice needs to list a pod; "" leaves
// the pod without one. No test sends a packet to it: nothing here routes
// to pods. It cannot be a loopback address all the same, since the API
// server refuses an EndpointSlice that lists one; PodIP gives addresses
// from TEST-NET-1 (192.0.2.0/24, RFC 5737), which is for documentation
// and routed nowhere.
func (c *ControlPlane) SetPodRunning(t testing.TB, ns, pod, ip string, ready bool) {
	t.Helper()
	now := time.Now().UTC().Format(time.RFC3339)
	status := map[bool]string{true: "True", false: "False"}[ready]
	cond := func(typ, status string) map[string]any {
		return map[string]any{"type": typ, "status": status, "lastTransitionTime": now}
	}
	st := map[string]any{
		"phase": "Running", "startTime": now,
		// A merge patch replaces the whole list.
		"conditions": []any{
			cond("PodScheduled", "True"), cond("Initialized", "True"),
			cond("ContainersReady", status), cond("Ready", status),
		},
	}
	if ip != "" {
		st["podIP"], st["podIPs"] = ip, []any{map[string]any{"ip": ip}}
	}
	patch := map[string]any{"status": st}
	path := "/api/v1/namespaces/" + ns + "/pods/" + pod + "/status"
	if code, body, err := c.Do(http.MethodPatch, path, c.adminToken, patch); err != nil || code != http.StatusOK {
		t.Fatalf("kubetest: PATCH %s: %d %v\n%s", path, code, err, body)
	}
}

// PodIP is the n-th address (0 to 253) a test gives pods: see SetPodRunning.
func PodIP(n int) string { return fmt.Sprintf("192.0.2.%d", 1+n%254) }

// FinishDeletion removes a pod whose deletion has begun, once what ran in
// it has stopped, as the kubelet does: with no grace left, and only if
// the pod is still the one with this uid (not a new pod of the same name).
// A pod already gone is no error.
func (c *ControlPlane) FinishDeletion(t testing.TB, ns, pod, uid string) {
	t.Helper()
	path := "/api/v1/namespaces/" + ns + "/pods/" + pod
	opts := map[string]any{
		"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0,
		"preconditions": map[string]any{"uid": uid},
	}
	code, body, err := c.Do(http.MethodDelete, path, c.adminToken, opts)
	if err != nil || (code != http.StatusOK && code != http.StatusNotFound) {
		t.Fatalf("kubetest: DELETE %s: %d %v\n%s", path, code, err, body)
	}
}

// Pod is what tests read of a pod.
type Pod struct {
	Metadata struct {
		Name              string            `json:"name"`
		UID               string            `json:"uid"`
		Labels            map[string]string `json:"labels"`
		Annotations       map[string]string `json:"annotations"`
		DeletionTimestamp string            `json:"deletionTimestamp"`
		OwnerReferences   []struct {
			Kind string `json:"kind"`
			Name string `json:"name"`
		} `json:"ownerReferences"`
	} `json:"metadata"`
	Spec struct {
		NodeName                      string `json:"nodeName"`
		ServiceAccountName            string `json:"serviceAccountName"`
		TerminationGracePeriodSeconds *int64 `json:"terminationGracePeriodSeconds"`
	} `json:"spec"`
	Status struct {
		Phase      string `json:"phase"`
		PodIP      string `json:"podIP"`
		Conditions []struct {
			Type   string `json:"type"`
			Status string `json:"status"`
		} `json:"conditions"`
	} `json:"status"`
}

// Ready reports whether the pod's Ready condition is True.
func (p *Pod) Ready() bool {
	for _, cond := range p.Status.Conditions {
		if cond.Type == "Ready" {
			return cond.Status == "True"
		}
	}
	return false
}

// Deleting reports whether the pod's deletion has begun.
func (p *Pod) Deleting() bool { return p.Metadata.DeletionTimestamp != "" }

// Pods lists the pods in ns that selector (a label selector, URL-encoded,
// or "" for all) picks.
func (c *ControlPlane) Pods(t testing.TB, ns, selector string) []Pod {
	t.Helper()
	var list struct {
		Items []Pod `json:"items"`
	}
	c.Get(t, "/api/v1/namespaces/"+ns+"/pods?labelSelector="+selector, &list)
	return list.Items
}
