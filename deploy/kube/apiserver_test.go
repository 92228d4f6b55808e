package kube

import (
	"bytes"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lockex/lockex/internal/kubetest"
	"sigs.k8s.io/yaml"
)

// apiServer is a real kube-apiserver on etcd (kubetest's control plane)
// with what installing the chart as a team needs on top: a namespace the
// team administers, the aggregated roles and the Prometheus operator's
// kinds. Token authentication, RBAC and the default admission plugins are
// as a cluster's control plane has them.
type apiServer struct{ *kubetest.ControlPlane }

// kubeconfig writes a kubeconfig for token and returns its path.
func (a *apiServer) kubeconfig(t *testing.T, name, token string) string {
	t.Helper()
	cfg := map[string]any{
		"apiVersion": "v1", "kind": "Config", "current-context": "kit",
		"clusters": []any{map[string]any{"name": "kit", "cluster": map[string]any{
			"server": a.URL(), "certificate-authority": a.CAFile()}}},
		"users":    []any{map[string]any{"name": name, "user": map[string]any{"token": token}}},
		"contexts": []any{map[string]any{"name": "kit", "context": map[string]any{"cluster": "kit", "user": name}}},
	}
	b, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), name+".kubeconfig")
	if err := os.WriteFile(f, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// namespaceAdmin makes a namespace that user administers, and only it, as
// a team that installs a chart into its namespace would, and returns the
// user's token. The user may also manage the Prometheus operator's objects
// there, as installations of the operator grant namespace admins.
func (a *apiServer) namespaceAdmin(t *testing.T, ns, user string) string {
	t.Helper()
	token := a.UserToken(t, user)
	a.Create(t, "/api/v1/namespaces", map[string]any{
		"apiVersion": "v1", "kind": "Namespace",
		"metadata": map[string]any{"name": ns, "labels": map[string]any{
			// Warnings only: the chart's hardened profile is a value away.
			"pod-security.kubernetes.io/warn": "restricted"}},
	})
	a.Create(t, "/apis/rbac.authorization.k8s.io/v1/namespaces/"+ns+"/rolebindings", map[string]any{
		"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
		"metadata": map[string]any{"name": "team-admin"},
		"roleRef":  map[string]any{"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"},
		"subjects": []any{map[string]any{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}},
	})
	a.Create(t, "/apis/rbac.authorization.k8s.io/v1/namespaces/"+ns+"/roles", map[string]any{
		"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
		"metadata": map[string]any{"name": "monitoring-edit"},
		"rules": []any{map[string]any{"apiGroups": []string{"monitoring.coreos.com"},
			"resources": []string{"servicemonitors", "prometheusrules", "podmonitors"},
			"verbs":     []string{"get", "list", "watch", "create", "update", "patch", "delete"}}},
	})
	a.Create(t, "/apis/rbac.authorization.k8s.io/v1/namespaces/"+ns+"/rolebindings", map[string]any{
		"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
		"metadata": map[string]any{"name": "team-monitoring"},
		"roleRef":  map[string]any{"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "monitoring-edit"},
		"subjects": []any{map[string]any{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}},
	})
	return token
}

// aggregateRoles fills the aggregated ClusterRoles view, edit and admin
// with the rules of the roles their selectors pick, as kube-controller-
// manager's aggregation controller would (it does not run here), so that
// "admin" grants what it grants on a cluster.
func (a *apiServer) aggregateRoles(t *testing.T) {
	t.Helper()
	type clusterRole struct {
		APIVersion      string         `json:"apiVersion"`
		Kind            string         `json:"kind"`
		Metadata        map[string]any `json:"metadata"`
		Rules           []any          `json:"rules"`
		AggregationRule *struct {
			ClusterRoleSelectors []struct {
				MatchLabels map[string]string `json:"matchLabels"`
			} `json:"clusterRoleSelectors"`
		} `json:"aggregationRule,omitempty"`
	}
	const base = "/apis/rbac.authorization.k8s.io/v1/clusterroles"
	for _, name := range []string{"view", "edit", "admin"} {
		var role clusterRole
		a.Get(t, base+"/"+name, &role)
		if role.AggregationRule == nil {
			t.Fatalf("clusterrole %s has no aggregationRule", name)
		}
		role.Rules = nil
		for _, sel := range role.AggregationRule.ClusterRoleSelectors {
			var labels []string
			for k, v := range sel.MatchLabels {
				labels = append(labels, k+"="+v)
			}
			var list struct{ Items []clusterRole }
			a.Get(t, base+"?labelSelector="+url.QueryEscape(strings.Join(labels, ",")), &list)
			for _, r := range list.Items {
				role.Rules = append(role.Rules, r.Rules...)
			}
		}
		code, body, err := a.Do(http.MethodPut, base+"/"+name, a.AdminToken(), role)
		if err != nil || code != http.StatusOK {
			t.Fatalf("PUT clusterrole %s: %d %v\n%s", name, code, err, body)
		}
	}
}

// monitoringCRDs registers the Prometheus operator's two kinds the chart
// renders, and waits until they are served. Their schemas are left open:
// the operator's CRD files are not to be had here (its Go module of API
// types is, and the check package decodes the objects strictly into it).
func (a *apiServer) monitoringCRDs(t *testing.T) {
	t.Helper()
	for _, k := range []struct{ kind, plural string }{{"ServiceMonitor", "servicemonitors"}, {"PrometheusRule", "prometheusrules"}} {
		name := k.plural + ".monitoring.coreos.com"
		a.Create(t, "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", map[string]any{
			"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
			"metadata": map[string]any{"name": name},
			"spec": map[string]any{
				"group": "monitoring.coreos.com", "scope": "Namespaced",
				"names": map[string]any{"kind": k.kind, "plural": k.plural, "listKind": k.kind + "List", "singular": strings.ToLower(k.kind)},
				"versions": []any{map[string]any{"name": "v1", "served": true, "storage": true,
					"schema": map[string]any{"openAPIV3Schema": map[string]any{
						"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}},
			},
		})
		deadline := time.Now().Add(30 * time.Second)
		for {
			code, _, err := a.Do(http.MethodGet, "/apis/monitoring.coreos.com/v1/"+k.plural, a.AdminToken(), nil)
			if err == nil && code == http.StatusOK {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("CRD %s not served within 30s: %d %v", name, code, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
}

// TestHelmInstall installs every rendering of the chart (each example
// values file under ci/ and each of the kit's scenarios) with helm install
// on a real API server, each into a namespace of its own by a user who may
// administer only that namespace: RBAC, server-side validation and
// admission see every object.
func TestHelmInstall(t *testing.T) {
	renderings := map[string]string{} // name → values file
	files, err := filepath.Glob(filepath.Join(chartDir, "ci", "*-values.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no ci/*-values.yaml in %s: %v", chartDir, err)
	}
	for _, f := range files {
		renderings["ci-"+strings.TrimSuffix(filepath.Base(f), "-values.yaml")] = f
	}
	dir := t.TempDir()
	const hosts = "127.0.0.1:2181"
	script := (&witness{}).scriptFor(1, true)
	kit := map[string]func() map[string]any{
		"kit-root": func() map[string]any { return kitValues(imageRef("busybox-root"), imageRef("lockex"), hosts, script) },
		"kit-nonroot": func() map[string]any {
			return kitValues(imageRef("busybox-nonroot"), imageRef("lockex"), hosts, script)
		},
		"kit-semaphore": func() map[string]any {
			v := kitValues(imageRef("busybox-nonroot"), imageRef("lockex"), hosts, script)
			withSemaphore(v)
			return v
		},
		"kit-auth": func() map[string]any {
			v := kitValues(imageRef("busybox-nonroot"), imageRef("lockex"), hosts, script)
			withDigestAuth(v)
			return v
		},
		"kit-tls": func() map[string]any {
			v := kitValues(imageRef("busybox-nonroot"), imageRef("lockex"), hosts, script)
			withTLS(v, hosts)
			return v
		},
	}
	for name, values := range kit {
		b, err := yaml.Marshal(values())
		if err != nil {
			t.Fatal(err)
		}
		f := filepath.Join(dir, name+".yaml")
		if err := os.WriteFile(f, b, 0o644); err != nil {
			t.Fatal(err)
		}
		renderings[name] = f
	}

	var users []string
	for name := range renderings {
		users = append(users, "team-"+name)
	}
	a := &apiServer{kubetest.Start(t, kubetest.Users(users...))}
	a.aggregateRoles(t)
	a.monitoringCRDs(t)
	for name, file := range renderings {
		t.Run(name, func(t *testing.T) {
			token := a.namespaceAdmin(t, name, "team-"+name)
			kc := a.kubeconfig(t, "team-"+name, token)
			cmd := exec.Command("helm", "install", "rel", chartDir, "--namespace", name, "--values", file, "--kubeconfig", kc)
			cmd.Env = append(os.Environ(), "HELM_CONFIG_HOME="+dir, "HELM_CACHE_HOME="+dir, "HELM_DATA_HOME="+dir)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Run(); err != nil {
				t.Fatalf("helm install --values %s: %v\n%s", file, err, stderr.String())
			}
			if w := strings.TrimSpace(stderr.String()); w != "" {
				t.Logf("helm install --values %s warned:\n%s", filepath.Base(file), w)
			}
			code, body, err := a.Do(http.MethodGet, "/apis/apps/v1/namespaces/"+name+"/deployments", token, nil)
			if err != nil || code != http.StatusOK || !bytes.Contains(body, []byte(`"kind":"DeploymentList"`)) || !bytes.Contains(body, []byte(`"name":"rel-lockex"`)) {
				t.Errorf("after helm install, the Deployment rel-lockex is not stored: %d %v\n%.500s", code, err, body)
			}
		})
	}
}
