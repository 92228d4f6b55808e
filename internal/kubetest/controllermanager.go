package kubetest

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// controllerManagerUser is the identity RBAC's bootstrap roles give
// kube-controller-manager: enough to issue each controller a token of its
// own service account (--use-service-account-credentials), and no more.
const controllerManagerUser = "system:kube-controller-manager"

// controllers are the only ones ControllerManager runs: what a Deployment
// of lockex pods needs to roll, scale and keep a disruption budget, and
// what turns a Service's selector into the EndpointSlices a proxy routes
// by. No
// node, namespace or garbage-collector controller runs, so nothing here
// evicts, taints or collects behind the test's back.
var controllers = []string{"deployment-controller", "replicaset-controller", "disruption-controller", "endpointslice-controller"}

// ControllerManager also starts a real kube-controller-manager, with the
// controllers of a Deployment: a Deployment then makes ReplicaSets and a
// ReplicaSet makes and deletes pods, choosing which as a cluster would; and
// a Service's EndpointSlices list the Ready pods it selects, by the IP
// their status reports (SetPodRunning).
// No scheduler or kubelet runs: the test binds pods to a node (CreateNode,
// BindPod), reports them running (SetPodReady) and finishes their
// deletion (FinishDeletion), as a kubelet would.
func ControllerManager() Option {
	return func(c *config) { c.controllerManager = true }
}

// startControllerManager starts kube-controller-manager against the API
// server and returns once its controllers have started: each gets a
// service account of its own in kube-system when it starts.
func (c *ControlPlane) startControllerManager(t testing.TB, path string) {
	t.Helper()
	file := func(name string) string { return filepath.Join(c.dir, name) }
	kubeconfig := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: kubetest
  cluster: {server: %q, certificate-authority: %q}
users:
- name: controller-manager
  user: {token: %q}
contexts:
- name: kubetest
  context: {cluster: kubetest, user: controller-manager}
current-context: kubetest
`, c.URL(), c.caFile, c.tokens[controllerManagerUser])
	if err := os.WriteFile(file("controller-manager.kubeconfig"), []byte(kubeconfig), 0o600); err != nil {
		t.Fatalf("kubetest: %v", err)
	}
	args := []string{
		"--kubeconfig", file("controller-manager.kubeconfig"),
		"--use-service-account-credentials",
		// No leader to elect among one; no port to serve on: readiness is
		// read from the API server below.
		"--leader-elect=false", "--secure-port=0",
		"--controllers", strings.Join(controllers, ","),
		"--profiling=false", "--v=0",
	}
	c.daemons = append(c.daemons, startDaemon(t, "kube-controller-manager", path, file("kube-controller-manager.log"), args...))
	c.waitReady(t, "kube-controller-manager", func() error {
		for _, name := range controllers {
			code, body, err := c.Do(http.MethodGet, "/api/v1/namespaces/kube-system/serviceaccounts/"+name, c.adminToken, nil)
			if err != nil {
				return err
			}
			if code != http.StatusOK {
				return fmt.Errorf("no service account kube-system/%s yet: %d %s", name, code, body)
			}
		}
		return nil
	})
}
