package e2e

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/lockex/lockex/internal/kubetest"
)

// kubeAPI is a real kube-apiserver on etcd (kubetest's control plane) with
// what the e2e tests read of it as a cluster's pods would see it. lockex's
// --active-label talks to it as it would in a cluster; no kubelet runs, so
// pods are stored and never run.
type kubeAPI struct{ *kubetest.ControlPlane }

func startKubeAPI(t *testing.T) *kubeAPI { return &kubeAPI{kubetest.Start(t)} }

// podLabels returns a pod's labels.
func (a *kubeAPI) podLabels(t *testing.T, ns, name string) map[string]string {
	t.Helper()
	var pod struct {
		Metadata struct {
			Labels map[string]string `json:"labels"`
		} `json:"metadata"`
	}
	a.Get(t, "/api/v1/namespaces/"+ns+"/pods/"+name, &pod)
	return pod.Metadata.Labels
}

// selected lists the pods a label selector picks, as a Service's selector
// picks its endpoints.
func (a *kubeAPI) selected(t *testing.T, ns, selector string) []string {
	t.Helper()
	var list struct {
		Items []struct {
			Metadata struct {
				Name string `json:"name"`
			} `json:"metadata"`
		} `json:"items"`
	}
	a.Get(t, "/api/v1/namespaces/"+ns+"/pods?labelSelector="+selector, &list)
	var names []string
	for _, p := range list.Items {
		names = append(names, p.Metadata.Name)
	}
	return names
}

// serviceAccountDir writes what the kubelet mounts for a pod's service
// account: a token the API server issued (TokenRequest, bound to the pod),
// its CA and the namespace.
func (a *kubeAPI) serviceAccountDir(t *testing.T, ns, account, pod, podUID string) string {
	t.Helper()
	tr := a.Create(t, "/api/v1/namespaces/"+ns+"/serviceaccounts/"+account+"/token", map[string]any{
		"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
		"spec": map[string]any{
			"expirationSeconds": 3600,
			"boundObjectRef":    map[string]any{"apiVersion": "v1", "kind": "Pod", "name": pod, "uid": podUID},
		},
	})
	token, _ := tr["status"].(map[string]any)["token"].(string)
	if token == "" {
		t.Fatalf("TokenRequest gave no token: %v", tr)
	}
	dir := t.TempDir()
	for name, data := range map[string][]byte{"token": []byte(token), "ca.crt": a.CAPEM(), "namespace": []byte(ns)} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}
