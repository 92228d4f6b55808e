package e2e

import (
	"encoding/json"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDrainBeforeStop: with --active-label, a holder told to stop
// (SIGTERM, as a kubelet stops a pod) takes its pod's label off before it
// passes the signal on, so a Service has stopped selecting the pod by the
// time its workload is told to stop: the workload, on SIGTERM, reads its
// pod from the real API server and finds no label.
func TestDrainBeforeStop(t *testing.T) {
	api := startKubeAPI(t)
	zk := startZK(t)
	const ns, name = "team-a", "web-0"
	api.Create(t, "/api/v1/namespaces", map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": ns}})
	api.Create(t, "/api/v1/namespaces/"+ns+"/serviceaccounts", map[string]any{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": map[string]any{"name": "web"}})
	api.Create(t, "/apis/rbac.authorization.k8s.io/v1/namespaces/"+ns+"/roles", map[string]any{
		"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": map[string]any{"name": "web"},
		"rules": []any{map[string]any{"apiGroups": []string{""}, "resources": []string{"pods"}, "verbs": []string{"patch"}}},
	})
	api.Create(t, "/apis/rbac.authorization.k8s.io/v1/namespaces/"+ns+"/rolebindings", map[string]any{
		"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": map[string]any{"name": "web"},
		"roleRef":  map[string]any{"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "web"},
		"subjects": []any{map[string]any{"kind": "ServiceAccount", "name": "web", "namespace": ns}},
	})
	pod := api.Create(t, "/api/v1/namespaces/"+ns+"/pods", map[string]any{
		"apiVersion": "v1", "kind": "Pod", "metadata": map[string]any{"name": name, "labels": map[string]string{"app": "web"}},
		"spec": map[string]any{"serviceAccountName": "web", "containers": []any{map[string]any{"name": "app", "image": "registry.example.com/web:1"}}},
	})
	uid := pod["metadata"].(map[string]any)["uid"].(string)

	dir := t.TempDir()
	adminToken := filepath.Join(dir, "admin-token")
	if err := os.WriteFile(adminToken, []byte(api.AdminToken()), 0o600); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "labels-at-term")
	env := []string{
		"KUBERNETES_SERVICE_HOST=" + api.Host(), "KUBERNETES_SERVICE_PORT=" + api.Port(),
		"LOCKEX_SERVICEACCOUNT_DIR=" + api.serviceAccountDir(t, ns, "web", name, uid),
		"LOCKEX_POD_NAME=" + name,
	}
	l := startObserved(t, env, "-z", zk.Hosts(), "-i", "web", "--active-label", activeLabel+"=true", "--",
		python, "testdata/label_at_term.py", api.URL()+"/api/v1/namespaces/"+ns+"/pods/"+name, api.CAFile(), adminToken, out)
	eventually(t, 15*time.Second, "the holder's pod is labelled", func() bool {
		return api.podLabels(t, ns, name)[activeLabel] == "true"
	})
	// Its SIGTERM handler is in place once it says it started.
	eventually(t, 15*time.Second, "the workload starts", func() bool { _, err := os.Stat(out + ".started"); return err == nil })

	_ = l.cmd.Process.Signal(syscall.SIGTERM)
	if code := l.wait(t, 15*time.Second); code != 0 {
		t.Fatalf("lockex exit %d, want the workload's 0; log:\n%s", code, l.stderr)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatalf("the workload did not record its pod's labels at SIGTERM: %v; log:\n%s", err, l.stderr)
	}
	var labels map[string]string
	if err := json.Unmarshal(b, &labels); err != nil {
		t.Fatal(err)
	}
	if v, ok := labels[activeLabel]; ok {
		t.Errorf("at SIGTERM the workload's pod still carried %s=%s: traffic was still routed to it", activeLabel, v)
	}
	if labels["app"] != "web" {
		t.Errorf("labels at SIGTERM %v: the read is not of the pod", labels)
	}
	if !strings.Contains(l.stderr.String(), "pod label removed") {
		t.Errorf("no log line for the drain:\n%s", l.stderr)
	}
}

// TestDrainBounded: with an API server that never answers, the drain
// gives up and the signal still reaches the workload, which stops.
func TestDrainBounded(t *testing.T) {
	zk := startZK(t)
	host, port := hungAPI(t)
	sa := t.TempDir()
	for name, content := range map[string]string{"token": "tok-1", "namespace": "team-a",
		"ca.crt": string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: startLostAnswerAPI(t).srv.Certificate().Raw}))} {
		if err := os.WriteFile(filepath.Join(sa, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	env := []string{"KUBERNETES_SERVICE_HOST=" + host, "KUBERNETES_SERVICE_PORT=" + port,
		"LOCKEX_SERVICEACCOUNT_DIR=" + sa, "LOCKEX_POD_NAME=web-0"}
	term := filepath.Join(t.TempDir(), "term")
	l := startObserved(t, env, "-z", zk.Hosts(), "-i", "web", "--active-label", activeLabel+"=true", "--",
		"sh", "-c", `trap 'echo term > `+term+`; exit 0' TERM; while :; do sleep 0.05; done`)
	l.activeAfter(t, "running")
	_ = l.cmd.Process.Signal(syscall.SIGTERM)
	if code := l.wait(t, 20*time.Second); code != 0 {
		t.Fatalf("lockex exit %d, want the workload's 0; log:\n%s", code, l.stderr)
	}
	if _, err := os.Stat(term); err != nil {
		t.Errorf("the workload never got SIGTERM: %v", err)
	}
	if !strings.Contains(l.stderr.String(), "pod label not removed in time") {
		t.Errorf("no log line for the drain given up:\n%s", l.stderr)
	}
}

// TestAPIServerDownLockWorks: with --active-label and --deletion-cost and
// no API server listening, the lock works as without them (a holder, then
// the next one, never two at once), and the failures are logged once per
// streak and counted in lockex_pod_patch_failures_total.
func TestAPIServerDownLockWorks(t *testing.T) {
	zk := startZK(t)
	host, port, _ := net.SplitHostPort(closedPort(t))
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
	logPath := filepath.Join(t.TempDir(), "log")
	args := func(who string) []string {
		return append([]string{"-z", zk.Hosts(), "-i", "api-down", "--active-label", activeLabel + "=true", "--deletion-cost", "--"},
			ticker(logPath, who, 2*time.Second, false)...)
	}
	a := startObserved(t, env("web-a"), args("a")...)
	waitRecord(t, logPath, "a")
	b := startObserved(t, env("web-b"), args("b")...)
	b.activeAfter(t, "contenders ahead")
	var failures float64
	eventually(t, 15*time.Second, "the holder counts failed patches", func() bool {
		failures, _ = metricValue(strings.TrimPrefix(a.base, "http://"), "lockex_pod_patch_failures_total")
		return failures >= 1
	})
	for who, l := range map[string]*observed{"a": a, "b": b} {
		if code := l.wait(t, 20*time.Second); code != 0 {
			t.Fatalf("%s exit %d, want the workload's 0; log:\n%s", who, code, l.stderr)
		}
		if n := strings.Count(l.stderr.String(), "cannot patch the pod; retrying"); n != 1 {
			t.Errorf("%s logged %d failure lines, want 1 for the streak:\n%s", who, n, l.stderr)
		}
	}
	if v := mustBeOneAtATime(t, logPath); v.runs != 2 {
		t.Errorf("%d runs, want a's and b's", v.runs)
	}
	t.Logf("the holder counted %v failed patches while it held", failures)
}
